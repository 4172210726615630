"""SIGTERM drains a worker: the stage in flight finishes within the grace period (and is not run
again), or, past it, goes back to the queue for another worker; both are said in the logs."""
import os
import signal
import sys
import time

import pytest

from pipeline import emit
from pipeline.models import Run, StageRun
from tests.conftest import ManagedProcess, child_env, purge_queues, queue_state, read_log_lines, wait_for
from tests.testapp.models import SideEffect

pytestmark = pytest.mark.broker


def start_worker(database_url: str, name: str, grace_ms: int) -> ManagedProcess:
    """One worker process on the `killable` queue, logging to `<name>.jsonl`, with that grace period."""
    process = ManagedProcess(
        name,
        [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "2",
         "--worker-shutdown-timeout", str(grace_ms), "--queues", "killable"],
        child_env(database_url, PIPELINE_PROCESS=name),
    )
    try:
        wait_for(lambda: (queue_state("killable") or (0, 0))[1] >= 1, 60, f"{name} to consume")
    except AssertionError:
        process.stop()
        raise AssertionError(f"{name} did not start:\n{process.output()[-3000:]}")
    return process


def terminate_master(process: ManagedProcess) -> float:
    """SIGTERM to the master only, as Kubernetes, Docker and systemd (KillMode=mixed) send it;
    returns how long the worker took to exit."""
    started = time.monotonic()
    os.kill(process.popen.pid, signal.SIGTERM)
    process.popen.wait(60)
    return time.monotonic() - started


def lines(name: str, event: str) -> list[dict]:
    return [line for line in read_log_lines(f"{name}.jsonl") if line.get("event") == event]


def effects(run_id, stage: str) -> int:
    return SideEffect.objects.filter(run_id=str(run_id), stage=stage).count()


def test_sigterm_lets_the_stage_in_flight_finish_and_logs_the_drain(transactional_db, test_database_url):
    purge_queues("killable")
    first = start_worker(test_database_url, "drain-worker-1", grace_ms=20_000)
    try:
        run_id = Run.objects.get(event_id=emit("test.killable", {"sleep": 8})).id  # the SIGTERM must come while it runs
        wait_for(lambda: effects(run_id, "slow") == 1, 30, "the 8-second stage to start")
        took = terminate_master(first)
    finally:
        first.stop()
    assert first.popen.returncode == 0, first.output()[-2000:]
    # It waited for the stage (and no longer: its last line says the drain ended once the stage
    # succeeded, below; how many seconds that took on this machine is not the point).
    assert took >= 1

    slow = StageRun.objects.get(run_id=run_id, stage="slow")
    assert slow.status == "succeeded" and slow.attempts == 1
    [draining] = lines("drain-worker-1", "worker.draining")
    assert draining["in_flight"] == 1 and draining["stages"] == ["killable.slow"]
    assert draining["grace_seconds"] == 20
    [drained] = lines("drain-worker-1", "worker.drained")
    assert drained["level"] == "info"
    assert drained["finished"] == 1 and drained["abandoned"] == 0
    assert drained["duration_ms"] >= 1000
    assert draining["timestamp"] < drained["timestamp"]
    succeeded_at = [l for l in read_log_lines("drain-worker-1.jsonl")
                    if l.get("event") == "stage.succeeded" and l.get("stage") == "slow"]
    assert succeeded_at and draining["timestamp"] < succeeded_at[0]["timestamp"] < drained["timestamp"]

    # The next stage was published before the worker left; another worker finishes the run.
    second = start_worker(test_database_url, "drain-worker-2", grace_ms=20_000)
    try:
        run = wait_for(lambda: Run.objects.filter(id=run_id, status__in=["succeeded", "failed"]).first(), 30,
                       "the run to finish on the second worker")
    finally:
        second.stop()
    assert run.status == "succeeded"
    assert effects(run_id, "slow") == 1, "the drained stage ran again"
    assert effects(run_id, "before_kill") == 1 and effects(run_id, "after_kill") == 1


def test_past_the_grace_period_the_stage_goes_back_to_the_queue_and_another_worker_completes_the_run(
    transactional_db, test_database_url
):
    purge_queues("killable")
    first = start_worker(test_database_url, "drain-worker-3", grace_ms=1000)
    try:
        run_id = Run.objects.get(event_id=emit("test.killable", {"sleep": 30, "retry_sleep": 0.5})).id
        wait_for(lambda: effects(run_id, "slow") == 1, 30, "the 30-second stage to start")
        terminate_master(first)
    finally:
        first.stop()
    # It did not wait for the 30 s stage past its 1 s grace period: the stage never finished here
    # (not timed: a busy machine takes its time to stop a process either way).
    assert StageRun.objects.get(run_id=run_id, stage="slow").status == "running"
    [drained] = lines("drain-worker-3", "worker.drained")
    assert drained["level"] == "warning"
    assert drained["finished"] == 0 and drained["abandoned"] == 1
    assert drained["returned_to_queue"][0]["actor"] == "killable.slow"
    assert drained["returned_to_queue"][0]["run_id"] == str(run_id)
    wait_for(lambda: (queue_state("killable") or (0, 0))[0] == 1, 30, "the stage's message back in the queue")

    second = start_worker(test_database_url, "drain-worker-4", grace_ms=20_000)
    try:
        run = wait_for(lambda: Run.objects.filter(id=run_id, status__in=["succeeded", "failed"]).first(), 30,
                       "the run to finish on the second worker")
    finally:
        second.stop()
    assert run.status == "succeeded", run.error
    slow = StageRun.objects.get(run_id=run_id, stage="slow")
    assert slow.attempts == 2 and slow.status == "succeeded"
    assert effects(run_id, "slow") == 2  # the interrupted attempt, then the one that finished
    assert effects(run_id, "before_kill") == 1 and effects(run_id, "after_kill") == 1
    taken_over = [l for l in read_log_lines("drain-worker-4.jsonl")
                  if l.get("event") == "stage.succeeded" and l.get("run_id") == str(run_id) and l.get("stage") == "slow"]
    assert len(taken_over) == 1
