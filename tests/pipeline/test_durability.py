"""What a team must be able to trust, where it takes a real broker and real worker processes:
fan-in exactly once across processes, no lost or doubled work when a worker is killed or the
broker goes away. Replay, cancel, duplicates, time limits and outcomes run in the fast tier
(tests/pipeline/test_in_process.py)."""
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
from django.conf import settings
from django.db.models import Count

from pipeline import emit
from pipeline.models import Event, Run, StageRun
from tests.conftest import ROOT, ManagedProcess, child_env, purge_queues, start_worker, wait_for
from tests.testapp.models import SideEffect

pytestmark = pytest.mark.broker


def runs_of(pipeline: str):
    return Run.objects.filter(pipeline=pipeline)


def finished(pipeline: str, count: int, timeout: float) -> list[Run]:
    def done():
        runs = list(runs_of(pipeline).filter(status__in=["succeeded", "failed", "cancelled"]))
        return runs if len(runs) >= count else None

    return wait_for(done, timeout, f"{count} {pipeline} runs to finish", interval=0.5)


def effects(run_id, stage: str | None = None) -> int:
    query = SideEffect.objects.filter(run_id=str(run_id))
    return query.filter(stage=stage).count() if stage else query.count()


def test_fan_out_fan_in_runs_the_join_once_with_both_results_for_200_concurrent_runs(live_worker):
    event_ids = [emit("test.diamond", {"n": i}) for i in range(200)]
    runs = finished("diamond", 200, 180)
    assert all(r.status == "succeeded" for r in runs), Counter(r.status for r in runs)
    joins = {r.run_id: r.result for r in StageRun.objects.filter(stage="join", run__pipeline="diamond")}
    assert len(joins) == 200
    by_event = {str(r.event_id): r.id for r in runs}
    for n, event_id in enumerate(event_ids):
        assert joins[by_event[event_id]] == {"sum": 5 * n, "parents": ["left", "right"]}
    per_stage = Counter(SideEffect.objects.values_list("stage", flat=True))
    assert per_stage["join"] == 200 and per_stage["split"] == 200
    assert per_stage["left"] == 200 and per_stage["right"] == 200


def test_a_worker_killed_mid_stage_reruns_that_stage_and_nothing_that_had_succeeded(live_worker, test_database_url):
    purge_queues("killable")
    doomed = start_worker(test_database_url, "killable-worker-1", processes=1, threads=2, queue="killable")
    try:
        run_id = Run.objects.get(event_id=emit("test.killable", {"sleep": 30, "retry_sleep": 0.5})).id
        wait_for(lambda: effects(run_id, "slow") == 1, 30, "the slow stage to start")
        doomed.signal(signal.SIGKILL)  # master and worker process, mid-stage, no chance to ack or record
        doomed.popen.wait(10)
    finally:
        doomed.stop()
    assert StageRun.objects.get(run_id=run_id, stage="slow").status == "running"
    survivor = start_worker(test_database_url, "killable-worker-2", processes=1, threads=2, queue="killable")
    try:
        run = wait_for(lambda: Run.objects.filter(id=run_id, status__in=["succeeded", "failed"]).first(), 60,
                       "the run to complete on the surviving worker")
    finally:
        survivor.stop()
    assert run.status == "succeeded", run.error
    assert effects(run_id, "before_kill") == 1
    assert effects(run_id, "slow") == 2
    assert effects(run_id, "after_kill") == 1
    assert StageRun.objects.get(run_id=run_id, stage="slow").attempts == 2


@pytest.mark.skipif(bool(os.environ.get("TEST_EXTERNAL_BROKER")), reason="needs the local broker node to stop it")
# Its own waits (the broker's stop, its start up to 60 s, 180 s for the runs, then the shared worker
# idle before the flush) add up to more than the suite's 180 s default on a busy machine.
@pytest.mark.timeout(480)
def test_events_emitted_while_the_broker_is_down_all_complete_once_it_is_back(live_worker, test_database_url, client):
    port = settings.PIPELINE_BROKER_URL.rsplit(":", 1)[1].split("/")[0]
    broker_env = dict(os.environ, RABBITMQ_PORT=port)
    relay = ManagedProcess("relay", [sys.executable, "manage.py", "relay"], child_env(test_database_url))
    try:
        subprocess.run(["infra/rabbitmq.sh", "stop"], cwd=ROOT, env=broker_env, check=True, capture_output=True)
        try:
            from web.api.models import ApiToken

            token = ApiToken.issue("outage")[1]
            for i in range(50):
                emit("test.started", {"value": i})
            for i in range(50, 100):
                response = client.post("/api/events", data={"type": "test.started", "payload": {"value": i}},
                                       content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
                assert response.status_code == 202
            assert Event.objects.filter(published_at__isnull=True).count() == 100
        finally:
            subprocess.run(["infra/rabbitmq.sh", "start"], cwd=ROOT, env=broker_env, check=True, capture_output=True)
        runs = finished("three_stages", 100, 180)
    finally:
        relay.stop()
    assert all(r.status == "succeeded" for r in runs)
    assert Event.objects.filter(published_at__isnull=True).count() == 0
    per_run = SideEffect.objects.values("run_id", "stage").annotate(n=Count("id"))
    assert len(per_run) == 300 and all(row["n"] == 1 for row in per_run)


