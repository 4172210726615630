"""The run and stage state machines: allowed moves happen once, impossible ones are refused and logged."""
import pytest
import structlog
from django.utils import timezone

from pipeline import _states as states
from pipeline.models import Event, Run, StageRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def run():
    now = timezone.now()
    event = Event.objects.create(type="test.started", payload={}, occurred_at=now, trace_id="a" * 32)
    run = Run.objects.create(event=event, pipeline="three_stages", created_at=now)
    StageRun.objects.create(run=run, stage="first")
    return run


def test_a_run_moves_pending_running_succeeded_once(run):
    assert states.move_run(run.id, "running")
    assert not states.move_run(run.id, "running")  # a second, racing start loses
    assert states.move_run(run.id, "succeeded")
    assert Run.objects.get(id=run.id).status == "succeeded"


def test_an_impossible_run_transition_is_refused_and_logged(run):
    states.move_run(run.id, "running")
    states.move_run(run.id, "succeeded")
    with structlog.testing.capture_logs() as logs:
        assert not states.move_run(run.id, "running")
        assert not states.move_run(run.id, "failed")
    assert Run.objects.get(id=run.id).status == "succeeded"
    refusals = [line for line in logs if line.get("event") == "run.transition_refused"]
    assert {(r["from_status"], r["to_status"]) for r in refusals} == {("succeeded", "running"), ("succeeded", "failed")}


def test_a_succeeded_stage_cannot_be_claimed_again(run):
    now = timezone.now()
    assert states.claim_stage(run.id, "first", "m1", now, now + timezone.timedelta(seconds=60), "w")
    assert not states.claim_stage(run.id, "first", "m2", now, now + timezone.timedelta(seconds=60), "w")
    assert states.move_stage(run.id, "first", "succeeded", holder="m1")
    assert not states.claim_stage(run.id, "first", "m1", now, now + timezone.timedelta(seconds=60), "w")
    assert StageRun.objects.get(run=run, stage="first").attempts == 1


def test_a_redelivered_message_reclaims_its_own_stage_and_an_expired_lease_can_be_taken_over(run):
    now = timezone.now()
    assert states.claim_stage(run.id, "first", "m1", now, now + timezone.timedelta(seconds=60), "w")
    assert states.claim_stage(run.id, "first", "m1", now, now + timezone.timedelta(seconds=60), "w")
    later = now + timezone.timedelta(seconds=61)
    assert states.claim_stage(run.id, "first", "m2", later, later + timezone.timedelta(seconds=60), "w")
    assert not states.move_stage(run.id, "first", "succeeded", holder="m1", quiet_refusal=True)
    assert StageRun.objects.get(run=run, stage="first").attempts == 3


@pytest.fixture
def outcome_listener(monkeypatch):
    """Someone (as the webhooks app would) wants every outcome of every pipeline."""
    from pipeline import _outcomes as outcomes

    monkeypatch.setattr(outcomes, "_listeners", [lambda event_type, pipeline: True])


def test_ending_a_run_only_moves_its_state_its_outcome_is_the_callers(run, outcome_listener):
    states.move_run(run.id, "running")
    assert states.move_run(run.id, "cancelled", log_fields={"pipeline": run.pipeline})
    assert not Event.objects.filter(type="run.cancelled").exists()


def test_cancelling_a_run_emits_its_outcome_with_the_run_s_end(run, outcome_listener):
    from pipeline import _operations as operations

    states.move_run(run.id, "running")
    operations.cancel(str(run.id))
    outcome = Event.objects.get(type="run.cancelled")
    assert outcome.payload["run_id"] == str(run.id) and outcome.payload["pipeline"] == "three_stages"
    assert Run.objects.get(id=run.id).status == "cancelled"
