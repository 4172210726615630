"""A stage message redelivered (the broker connection of its worker broke) while a live worker
still runs its stage waits instead of running the stage a second time at once."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from pipeline import emit, _redelivery as redelivery
from pipeline.models import Run, StageRun, WorkerHeartbeat


class Delivery:
    def __init__(self, message_id: str, redelivered: bool = True, options: dict | None = None) -> None:
        self.message_id = message_id
        self.redelivered = redelivered
        self.options = options or {}


@pytest.fixture
def held_stage(db):
    run = Run.objects.get(event_id=emit("test.started", {"value": 1}))
    message_id = str(uuid.uuid4())
    StageRun.objects.filter(run=run, stage="first").update(
        status="running", message_id=message_id, worker="host-b:4242", lease_until=timezone.now() + timedelta(minutes=1))
    return str(run.id), message_id


def _beat(last_seen, stopped_at=None) -> None:
    WorkerHeartbeat.objects.create(host="host-b", pid=4242, started_at=timezone.now(), last_seen=last_seen,
                                   stopped_at=stopped_at)


def test_a_redelivered_message_whose_stage_a_live_worker_runs_is_held_back(held_stage):
    run_id, message_id = held_stage
    _beat(timezone.now())
    assert redelivery.live_holder(Delivery(message_id), run_id, "host-a:1") == "host-b:4242"
    # The deferred copy is a new publish (not flagged redelivered) but carries the mark: checked again.
    assert redelivery.live_holder(Delivery(message_id, False, {redelivery.HOLDER: "host-b:4242"}), run_id,
                                  "host-a:1") == "host-b:4242"


def test_a_holder_that_went_silent_or_stopped_is_taken_over(held_stage):
    run_id, message_id = held_stage
    _beat(timezone.now() - timedelta(minutes=5))
    assert redelivery.live_holder(Delivery(message_id), run_id, "host-a:1") is None
    WorkerHeartbeat.objects.all().delete()
    _beat(timezone.now(), stopped_at=timezone.now())
    assert redelivery.live_holder(Delivery(message_id), run_id, "host-a:1") is None


def test_a_first_delivery_is_not_checked(held_stage, django_assert_num_queries):
    run_id, message_id = held_stage
    _beat(timezone.now())
    with django_assert_num_queries(0):
        assert redelivery.live_holder(Delivery(message_id, redelivered=False), run_id, "host-a:1") is None


def test_a_redelivery_while_another_thread_of_this_process_runs_it_is_held_back(held_stage):
    run_id, message_id = held_stage
    redelivery.executing[message_id] = -1  # as if another thread were executing it
    try:
        assert redelivery.live_holder(Delivery(message_id), run_id, "host-a:1") == "host-a:1"
    finally:
        redelivery.executing.pop(message_id, None)


def test_a_first_delivery_while_another_thread_of_this_process_runs_its_copy_is_held_back(held_stage):
    """The broker's copy reached this process first and runs (it registered in `executing`); the
    first delivery, in another thread, must not claim the stage in the gap before the copy claims
    it (the copy may take a stage back from its own message id): it comes back later."""
    run_id, message_id = held_stage
    redelivery.executing[message_id] = -1  # the copy, executing in another thread
    try:
        assert redelivery.live_holder(Delivery(message_id, redelivered=False), run_id, "host-a:1") == "host-a:1"
    finally:
        redelivery.executing.pop(message_id, None)


def test_a_first_delivery_never_runs_a_stage_that_runs_under_its_own_id(held_stage, monkeypatch):
    """The node a worker read a message from dies before the ack: the broker hands a copy to
    another worker, which claims the stage and runs it; the first delivery, still in its worker's
    hands, comes to claim the stage next. It must not run it a second time: it comes back later,
    as a retried copy, which is checked against the live holder like a redelivered one."""
    from dramatiq.errors import Retry
    from dramatiq.middleware import CurrentMessage

    from pipeline import _runtime as runtime
    from tests.testapp.models import SideEffect
    from tests.testapp.pipelines import three_stages

    run_id, message_id = held_stage
    _beat(timezone.now())
    stage = three_stages.stages["first"]
    first = Delivery(message_id, redelivered=False)
    first.actor_name = stage.actor_name
    monkeypatch.setattr(CurrentMessage, "get_current_message", staticmethod(lambda: first))
    with pytest.raises(Retry):
        runtime.execute_stage(stage, run_id)
    row = StageRun.objects.get(run_id=run_id, stage="first")
    assert (row.status, row.worker, row.attempts) == ("running", "host-b:4242", 0)
    assert not SideEffect.objects.filter(run_id=run_id).exists()
    assert not redelivery.may_take_back(first)
    assert redelivery.may_take_back(Delivery(message_id))  # the broker's copy
    assert redelivery.may_take_back(Delivery(message_id, False, {"retries": 1}))  # published again by Retries


def test_a_redelivered_copy_never_takes_its_stage_from_a_delivery_that_claimed_it_after_the_check(db, monkeypatch):
    """Across processes: the broker's copy reaches worker A and finds nothing running (the first
    delivery, in worker B, has not claimed yet); B claims the stage in the gap; A's claim comes
    next. A may take a stage back only from the holder its check saw dead, so it leaves B's claim
    alone and comes back later, instead of running the stage a second time at once."""
    from dramatiq.errors import Retry
    from dramatiq.middleware import CurrentMessage

    from pipeline import _runtime as runtime, _states as states
    from tests.testapp.models import SideEffect
    from tests.testapp.pipelines import three_stages

    run_id = str(Run.objects.get(event_id=emit("test.started", {"value": 1})).id)
    message_id = str(uuid.uuid4())
    _beat(timezone.now())  # worker B (host-b:4242) is alive
    stage = three_stages.stages["first"]
    copy = Delivery(message_id)  # redelivered
    copy.actor_name = stage.actor_name
    monkeypatch.setattr(CurrentMessage, "get_current_message", staticmethod(lambda: copy))
    real_inspect = redelivery.inspect

    def inspect_then_b_claims(message, run, worker):
        found = real_inspect(message, run, worker)
        assert found == redelivery.Inspection()  # nothing running yet: nothing to defer to, nothing to take back
        now = timezone.now()
        assert states.claim_stage(run_id, "first", message_id, now, now + timedelta(minutes=1), "host-b:4242") == 1
        return found

    monkeypatch.setattr(redelivery, "inspect", inspect_then_b_claims)
    with pytest.raises(Retry):
        runtime.execute_stage(stage, run_id)
    row = StageRun.objects.get(run_id=run_id, stage="first")
    assert (row.status, row.worker, row.attempts) == ("running", "host-b:4242", 1)
    assert not SideEffect.objects.filter(run_id=run_id).exists()


def test_a_redelivered_copy_takes_its_stage_back_from_the_dead_holder_its_check_saw(held_stage):
    run_id, message_id = held_stage
    _beat(timezone.now() - timedelta(minutes=5))  # host-b:4242 went silent
    found = redelivery.inspect(Delivery(message_id), run_id, "host-a:1")
    assert found == redelivery.Inspection(holder=None, take_back="host-b:4242")
    from pipeline import _states as states

    now = timezone.now()
    # Only from that holder: had another worker claimed it meanwhile, the claim would take nothing.
    assert states.claim_stage(run_id, "first", message_id, now, now + timedelta(minutes=1), "host-a:1",
                              take_back_from="host-c:7") is None
    assert states.claim_stage(run_id, "first", message_id, now, now + timedelta(minutes=1), "host-a:1",
                              take_back_from=found.take_back) == 1
