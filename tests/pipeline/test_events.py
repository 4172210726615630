"""emit(): what is accepted, what is refused, and when it is published."""
import pytest
import structlog
from django.db import transaction

from pipeline import InvalidPayload, PayloadTooLarge, UnknownEventType, emit
from pipeline.models import Event, Run, StageRun
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch):
    """Records stage messages instead of sending them, to see exactly what emit publishes."""
    sent = []
    import pipeline._publisher

    monkeypatch.setattr(pipeline._publisher, "enqueue_stage", lambda stage, **kw: sent.append((stage.actor_name, kw)))
    return sent


def test_unknown_event_type_is_refused_and_nothing_is_stored(published):
    with pytest.raises(UnknownEventType, match=r"unknown event type 'order.shipped'.*order.placed"):
        emit("order.shipped", {"order_id": 1})
    assert Event.objects.count() == 0 and published == []


def test_invalid_payload_names_every_bad_field_and_stores_nothing(published):
    with pytest.raises(InvalidPayload) as caught:
        emit("order.placed", {"order_id": "not-a-number", "customer_email": "x@y.z", "items": []})
    fields = {e["field"] for e in caught.value.errors}
    assert {"order_id", "items", "total_cents"} <= fields
    assert "order_id" in str(caught.value)
    assert Event.objects.count() == 0 and Run.objects.count() == 0 and published == []


def test_payload_must_be_an_object(published):
    with pytest.raises(InvalidPayload, match="must be a JSON object"):
        emit("test.started", ["a", "list"])


def test_oversized_payload_is_refused(published, settings):
    settings.PIPELINE_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(PayloadTooLarge, match="over the limit of 100 bytes"):
        emit("order.placed", {"order_id": 1, "customer_email": "a@b.c", "total_cents": 1,
                              "items": [{"sku": "X" * 60, "quantity": 1}]})
    assert Event.objects.count() == 0 and published == []


def test_emit_records_event_run_and_first_stage_and_publishes_after_commit(published):
    event_id = emit("test.started", {"value": 3})
    event = Event.objects.get(id=event_id)
    run = Run.objects.get(event=event)
    assert run.pipeline == "three_stages" and run.status == "pending"
    assert list(StageRun.objects.filter(run=run).values_list("stage", flat=True)) == ["first"]
    assert [name for name, _ in published] == ["three_stages.first"]
    assert published[0][1]["run_id"] == str(run.id) and published[0][1]["trace_id"] == event.trace_id
    # Marked published by the group-commit writer, right after the publish.
    wait_for(lambda: Event.objects.get(id=event_id).published_at is not None, 30, "the event marked published")


def test_emit_inside_a_rolled_back_transaction_publishes_stores_and_logs_nothing(published):
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                emit("test.started", {"value": 1})
                raise RuntimeError("the caller's transaction fails after emitting")
        assert published == []
        assert Event.objects.count() == 0 and Run.objects.count() == 0
        assert not [line for line in logs if line.get("event") == "event.emitted"]
        emit("test.started", {"value": 2})
        assert [line for line in logs if line.get("event") == "event.emitted"]


def test_emit_inside_a_committed_transaction_publishes_only_at_commit(published):
    with transaction.atomic():
        emit("test.started", {"value": 1})
        assert published == []
    assert len(published) == 1


def test_same_idempotency_key_returns_the_first_event_and_starts_one_run(published):
    first = emit("test.started", {"value": 1}, idempotency_key="order-42")
    second = emit("test.started", {"value": 1}, idempotency_key="order-42")
    assert first == second
    assert Run.objects.count() == 1 and len(published) == 1


def test_events_and_runs_get_time_ordered_ids_so_rows_written_together_sit_together_in_their_indexes(published):
    import time

    from pipeline.models import WorkerHeartbeat

    first = emit("test.started", {"value": 1})
    time.sleep(0.002)  # the ids' time is in milliseconds
    second = emit("test.started", {"value": 2})

    events = [Event.objects.get(id=first), Event.objects.get(id=second)]
    runs = [Run.objects.get(event_id=first), Run.objects.get(event_id=second)]
    assert {row.id.version for row in events + runs} == {7}
    assert events[0].id < events[1].id and runs[0].id < runs[1].id  # later, greater: appended at an index's end
    created_ms = int.from_bytes(events[0].id.bytes[:6], "big")
    assert abs(created_ms - events[0].occurred_at.timestamp() * 1000) < 1000
    assert WorkerHeartbeat(host="h", pid=1).id.version == 7  # the rows the ORM creates too
    assert len({emit("test.started", {"value": n}) for n in range(200)}) == 200
