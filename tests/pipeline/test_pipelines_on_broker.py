"""Pipelines running for real: RabbitMQ, a `rundramatiq` worker process, the run store, the logs."""
import pytest

from pipeline import emit
from pipeline.models import Run, StageRun
from tests.conftest import read_log_lines, wait_for
from tests.testapp.models import SideEffect

pytestmark = pytest.mark.broker


def finished_run(event_id: str, timeout: float = 30) -> Run:
    return wait_for(
        lambda: Run.objects.filter(event_id=event_id, status__in=["succeeded", "failed", "cancelled"]).first(),
        timeout,
        f"a run of event {event_id} to finish",
    )


def stages_of(run: Run) -> dict[str, StageRun]:
    return {s.stage: s for s in StageRun.objects.filter(run=run)}


def test_three_stage_pipeline_completes_passing_results_forward(live_worker):
    event_id = emit("test.started", {"value": 1})
    run = finished_run(event_id)
    assert run.status == "succeeded", run.error
    stages = stages_of(run)
    assert [stages[n].result["value"] for n in ("first", "second", "third")] == [2, 20, 21]
    assert all(s.status == "succeeded" and s.attempts == 1 for s in stages.values())
    assert stages["third"].result["key"] == f"{run.id}:third"
    assert run.started_at <= stages["first"].started_at <= stages["third"].finished_at <= run.finished_at
    assert SideEffect.objects.filter(run_id=str(run.id)).count() == 3


def test_every_transition_of_a_run_is_a_log_line_with_its_ids(live_worker):
    event_id = emit("test.started", {"value": 5})
    run = finished_run(event_id)
    lines = wait_for(
        lambda: [l for l in read_log_lines() if l.get("run_id") == str(run.id) and l["event"] == "run.succeeded"]
        and [l for l in read_log_lines() if l.get("run_id") == str(run.id) or l.get("event_id") == event_id],
        10, "the run's log lines",
    )
    names = [(l["event"], l.get("stage")) for l in lines]
    assert ("event.emitted", None) in names and ("event.published", None) in names
    assert ("run.started", "first") in names and ("run.succeeded", "third") in names
    for stage in ("first", "second", "third"):
        assert ("stage.started", stage) in names and ("stage.succeeded", stage) in names
    trace_id = run.event.trace_id
    for line in lines:
        if line["event"].startswith(("stage.", "run.")):
            assert line["trace_id"] == trace_id and line["event_id"] == event_id
            assert line["pipeline"] == "three_stages" and line["attempt"] == 1
            assert line["process"] == "worker" and line["message_id"] and line["level"]
            assert line["timestamp"].endswith("Z") or "+00:00" in line["timestamp"]


def test_a_stage_that_fails_then_succeeds_is_retried_with_backoff(live_worker):
    event_id = emit("test.flaky", {"fail_times": 1})
    run = finished_run(event_id)
    assert run.status == "succeeded", run.error
    stages = stages_of(run)
    unreliable = stages["unreliable"]
    assert unreliable.attempts == 2 and unreliable.status == "succeeded"
    assert [e["attempt"] for e in unreliable.attempt_log] == [1]
    assert "attempt 1 failed on purpose" in unreliable.attempt_log[0]["error"]
    assert stages["finish"].status == "succeeded"
    retry_lines = wait_for(
        lambda: [l for l in read_log_lines() if l.get("run_id") == str(run.id) and l["event"] == "stage.retrying"],
        10, "the stage.retrying line",
    )
    assert retry_lines[0]["stage"] == "unreliable" and retry_lines[0]["retry_in_ms"] >= 100
    assert retry_lines[0]["error_type"] == "RuntimeError"


def test_a_stage_that_exhausts_its_retries_fails_the_run_and_nothing_after_it_runs(live_worker):
    event_id = emit("test.flaky", {"fail_times": 99})
    run = finished_run(event_id)
    assert run.status == "failed"
    assert "stage unreliable: RuntimeError: attempt 3 failed on purpose" in run.error
    stages = stages_of(run)
    unreliable = stages["unreliable"]
    assert unreliable.status == "failed" and unreliable.attempts == 3
    assert [e["attempt"] for e in unreliable.attempt_log] == [1, 2, 3]
    assert all("Traceback" in e["traceback"] for e in unreliable.attempt_log)
    assert "finish" not in stages
    assert not SideEffect.objects.filter(run_id=str(run.id), stage="finish").exists()
    assert SideEffect.objects.filter(run_id=str(run.id), stage="unreliable").count() == 3
