"""Pipelines run in the test process by `pipeline.testing` (no broker): DAG order, results passed
forward, retries, fan-in, failures, replay, cancel, outcomes."""
import pytest

from pipeline import emit
from tests.testapp.models import SideEffect, Switch


def test_three_stage_pipeline_completes_passing_results_forward(pipelines):
    run = pipelines.run_of(pipelines.emit("test.started", {"value": 1}))
    run.assert_succeeded()
    assert [run.result(n)["value"] for n in ("first", "second", "third")] == [2, 20, 21]
    assert all(s.attempts == 1 for s in run.stages.values())
    assert run.result("third")["key"] == f"{run.id}:third"
    assert SideEffect.objects.filter(run_id=run.id).count() == 3


def test_a_stage_that_fails_then_succeeds_is_retried(pipelines):
    run = pipelines.run_of(pipelines.emit("test.flaky", {"fail_times": 1}))
    run.assert_succeeded()
    run.assert_stage("unreliable", status="succeeded", attempts=2)
    (retry,) = run.logs("stage.retrying")
    assert retry["stage"] == "unreliable" and retry["retry_in_ms"] >= 100


@pytest.mark.django_db(transaction=True)
def test_transactional(pipelines):
    run = pipelines.run_of(pipelines.emit("test.diamond", {"n": 3}))
    run.assert_succeeded()
    assert run.result("join") == {"sum": 15, "parents": ["left", "right"]}
