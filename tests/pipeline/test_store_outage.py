"""The run store's database goes away under load and comes back: nothing lost, nothing doubled,
one line each way per worker process, and the web answers 503 meanwhile.

PostgreSQL only (it stops and starts the test cluster that infra/test.sh runs on TEST_PGPORT);
SQLite has no server to lose. Real broker, real worker processes."""
from __future__ import annotations

import os
import subprocess
import time
from collections import Counter

import pytest
from django.db import connection, connections

from pipeline import emit
from pipeline.errors import StoreUnavailable
from pipeline.models import Run, StageRun
from tests.conftest import ROOT, purge_queues, read_log_lines, start_worker, wait_for
from tests.testapp.models import SideEffect
from tests.testapp.pipelines import OUTAGE_QUEUE

pytestmark = pytest.mark.broker

RUNS = 200
OUTAGE_SECONDS = 20
STAGES = ("outage_one", "outage_two", "outage_three")


def _our_postgres() -> tuple[dict, str]:
    """The environment that drives infra/postgres.sh for the suite's own cluster, or a skip."""
    if connection.vendor != "postgresql":
        pytest.skip("needs the PostgreSQL pass of make test (there is no database server to stop on SQLite)")
    params = connection.settings_dict
    port = str(params.get("PORT") or 5432)
    if (params.get("HOST") or "127.0.0.1") not in ("127.0.0.1", "localhost") or not (
            ROOT / "var" / f"postgres-{port}" / "data").is_dir():
        pytest.skip("the database is not this checkout's infra/postgres.sh cluster: not ours to stop")
    return {**os.environ, "PGPORT": port}, port


def _postgres(action: str, env: dict) -> None:
    subprocess.run([str(ROOT / "infra" / "postgres.sh"), action], env=env, check=True, timeout=90,
                   stdout=subprocess.DEVNULL)


# Its own waits (PostgreSQL stop and start up to 90 s each, the 20 s outage, 120 s to finish) add
# up to more than the suite's 180 s default, which a busy machine can reach.
@pytest.mark.timeout(420)
def test_runs_survive_a_database_outage_each_stage_once_with_one_line_each_way_per_worker(
        transactional_db, test_database_url, api_token, client):
    env, _port = _our_postgres()
    purge_queues(OUTAGE_QUEUE)
    worker = start_worker(test_database_url, "outage-worker", processes=2, threads=8, queue=OUTAGE_QUEUE,
                          own_log=True)
    started = False
    during: dict = {}
    try:
        for i in range(RUNS):
            emit("test.outage", {"sleep": 0.2})
        wait_for(lambda: SideEffect.objects.filter(stage="outage_one").exists(), 30, "the first stages to start")
        connections.close_all()
        _postgres("stop", env)
        stopped_at = time.monotonic()
        try:
            time.sleep(2)  # the workers notice: claims and outcomes fail
            with pytest.raises(StoreUnavailable):
                emit("test.outage", {"sleep": 0.0})
            during["api"] = client.post("/api/events", {"type": "test.outage", "payload": {}},
                                        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_token}")
            during["readyz"] = client.get("/readyz")
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
        finally:
            _postgres("start", env)  # whatever happened above: the rest of the suite needs it
            started = True
            connections.close_all()
        runs = wait_for(lambda: (lambda r: r if len(r) >= RUNS else None)(
            list(Run.objects.filter(pipeline="outage_chain", status__in=["succeeded", "failed", "cancelled"]))),
            120, f"{RUNS} runs to finish after the outage", interval=0.5)
    finally:
        if not started:
            _postgres("start", env)
        worker.stop()

    assert during["api"].status_code == 503, during["api"].content
    assert during["api"].json()["error"].startswith("the run store (database) is unreachable")
    assert during["api"]["Retry-After"]
    assert during["readyz"].status_code == 503
    assert during["readyz"].json()["checks"]["database"]["store"] == "unreachable"

    assert Run.objects.filter(pipeline="outage_chain").count() == RUNS  # the refused emit left nothing
    assert Counter(r.status for r in runs) == {"succeeded": RUNS}
    done = Counter(StageRun.objects.filter(run__pipeline="outage_chain", status="succeeded")
                   .values_list("stage", flat=True))
    assert done == {stage: RUNS for stage in STAGES}
    executions = Counter(SideEffect.objects.filter(stage__in=STAGES).values_list("run_id", "stage"))
    assert len(executions) == RUNS * len(STAGES) and set(executions.values()) == {1}, (
        "a stage's side effect ran twice: " + str([k for k, n in executions.items() if n > 1][:5]))

    lines = read_log_lines("outage-worker.jsonl")
    pids = {line["pid"] for line in lines if line.get("event") == "stage.started"}
    assert len(pids) == 2, pids
    for pid in pids:
        mine = [line for line in lines if line.get("pid") == pid]
        said = [line["event"] for line in mine if line.get("event", "").startswith("store.")]
        assert said == ["store.unavailable", "store.recovered"], (pid, said)
        # One clear line, not a traceback per message.
        assert not [line for line in mine if line.get("level") in ("error", "critical") or "exception" in line], pid
    unavailable = next(line for line in lines if line.get("event") == "store.unavailable")
    assert unavailable["error_type"] and unavailable["level"] == "warning"
