"""`emit` and `start`: the one way work enters the system (declaring event types and checking
payloads is `pipeline.payloads`'s).

An emitted event is written together with its runs in the caller's transaction (the outbox);
its first stages are published only after that transaction commits."""
from __future__ import annotations

import uuid
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from . import conf, _publisher as publisher, _tracing as tracing, _writer as writer
from ._definitions import Pipeline, registry
from ._ids import new_id
from .flow import _lines as flow_lines
from .flow._rules import URGENT, check_priority
from .logging import get_logger, info_on_commit
from .models import Event
from ._payloads import reserved as _reserved, validate, validate_start_payload
from .request_context import linked_trace_id
from ._tx import Tx

log = get_logger("pipeline.events")

def emit(
    type: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
    trace_id: str | None = None,
    source: str = "",
    engine: bool = False,
    priority: str | None = None,
) -> str:
    """Validates and records an event, starts one run per subscribed pipeline, returns the event id.
    `priority="urgent"`: its runs' stage messages overtake queued normal ones (pipeline.flow.priority).

    Inside `transaction.atomic()` nothing is published unless that transaction commits. With an
    `idempotency_key`, a repeated emit returns the first event's id and starts nothing. Event
    types and keys in the engine's namespace raise ReservedName; `engine=True` is the engine's
    own emits (outcomes, webhook deliveries), never a caller's."""
    if not engine:
        reserved = _reserved(type, idempotency_key)
        if reserved is not None:
            raise reserved
    if priority is not None:
        check_priority(priority, "emit")
    data = validate(type, payload)
    return _record(type, data, registry.subscribed_to(type, data), idempotency_key, trace_id, source, "event",
                   priority)


def start(
    pipeline_name: str,
    payload: Any = None,
    *,
    trigger: str = "manual",
    idempotency_key: str | None = None,
    trace_id: str | None = None,
    engine: bool = False,
) -> str:
    """Starts one pipeline directly (schedules, the CLI), as an event of its type that only it receives.
    Idempotency keys in the engine's namespace raise ReservedName unless `engine` (the scheduler)."""
    if not engine and idempotency_key is not None:
        reserved = _reserved("", idempotency_key)
        if reserved is not None:
            raise reserved
    pipeline = registry.get(pipeline_name)
    data = validate_start_payload(pipeline_name, payload)
    return _record(pipeline.event_type, data, [pipeline], idempotency_key, trace_id, trigger, trigger)


def _record(
    type_name: str,
    data: dict[str, Any],
    pipelines: list[Pipeline],
    idempotency_key: str | None,
    trace_id: str | None,
    source: str,
    trigger: str,
    priority: str | None = None,
) -> str:
    trace_id = trace_id or tracing.current_trace_id() or tracing.new_trace_id()
    event_id = new_id()
    now = timezone.now()
    runs = [(new_id(), p) for p in pipelines]
    payload_json = orjson.dumps(data)  # serialized once: stored, and its size decides what is logged and carried
    payload_text, payload_size = payload_json.decode(), len(payload_json)
    linked = linked_trace_id()  # an untrusted traceparent that came with the request (pipeline.request_context)
    # The rest of the trace context that came with the request: the flags as received, tracestate.
    incoming = tracing.incoming_for(trace_id)
    flags, tracestate = (incoming.flags, incoming.tracestate) if incoming else (tracing.DEFAULT_FLAGS, "")

    flowing = any(p.flow for _, p in runs)
    admissions: dict[uuid.UUID, Any] = {}  # flow control's answer per run (pipeline.flow)
    if flowing:
        from .flow import _slots as slots, _statements as flow_statements  # the run store's: not before the app registry is ready

    def write(tx: Tx) -> None:
        # The event (the outbox row), its runs and their first stages, in the caller's transaction.
        q, d = tx.q, tx.d
        key, when = d.uuid(event_id), d.dt(now)
        # Nothing here is read back: the rows go into the batch's multi-row INSERTs.
        tx.insert_later(q.event_head, q.event_row, (key, type_name, payload_text, when, trace_id, idempotency_key,
                                                      source, linked, flags, tracestate, priority or ""))
        for r, p in runs:
            run_key = d.uuid(r)
            if p.flow:  # takes a slot, waits for one, or is skipped (pipeline.flow.slots)
                admission = admissions[r] = slots.admit(tx, r, event_id, trace_id, p, data, now)
                tx.insert_later(q.run_head, flow_statements.statements_for(d.vendor).run_row, (
                    run_key, key, type_name, p.name, admission.status, trigger, when,
                    when if admission.status == "skipped" else None))
                if admission.status == "skipped":
                    continue
            else:
                tx.insert_later(q.run_head, q.run_row, (run_key, key, type_name, p.name, trigger, when))
            for s in p.roots:
                tx.insert_later(q.root_head, q.root_row, (run_key, s.name, when))

    # Inside the caller's transaction, the rows commit (or roll back) with the caller's work;
    # otherwise they go in the process's next group commit, shared with other threads' emits. A
    # singleton start that may cancel a run in progress takes a transaction of its own: the
    # cancelled run's outcome is emitted in it.
    in_caller_transaction = writer.in_transaction()
    own_transaction = flowing and any(p.singleton is not None and p.singleton.mode == "cancel" for _, p in runs)
    try:
        if in_caller_transaction:
            writer.run_direct(write)
            _flow_after(admissions, runs, event_id, trace_id)
        elif own_transaction:
            with transaction.atomic():
                writer.run_direct(write)
                _flow_after(admissions, runs, event_id, trace_id)
        else:
            writer.run(write)
            _flow_after(admissions, runs, event_id, trace_id)
    except (IntegrityError, connection.Database.IntegrityError):  # type: ignore[attr-defined]
        if idempotency_key is None:
            raise
        first = Event.objects.filter(idempotency_key=idempotency_key).values_list("id", flat=True).first()
        if first is None:
            raise
        log.info("event.deduplicated", event_id=str(first), event_type=type_name, idempotency_key=idempotency_key)
        return str(first)
    event_id_text = str(event_id)
    info_on_commit(
        log,
        "event.emitted",
        event_id=event_id_text,
        event_type=type_name,
        trace_id=trace_id,
        # The payload (secrets masked) makes a run findable from a business id such as an order id.
        payload=data if payload_size <= 4096 else {"truncated_bytes": payload_size},
        runs=[{"run_id": str(r), "pipeline": p.name} for r, p in runs],
        runs_started=len(runs),
        source=source,
    )
    # A run that waits for a flow-control slot (or was skipped) publishes nothing now.
    first_stages = [(stage, str(r)) for r, p in runs if r not in admissions or admissions[r].status == "pending"
                    for stage in p.roots]
    # What the first stages would otherwise read back: the event, and its payload when small.
    carried: dict[str, Any] = {"event_type": type_name, "occurred_at": now.isoformat()}
    if payload_size <= conf.get("PIPELINE_MESSAGE_CARRY_BYTES"):
        carried["payload"] = data
    if priority == URGENT:
        carried["priority"] = priority
    if in_caller_transaction:
        transaction.on_commit(lambda: _publish_after_commit(event_id_text, trace_id, first_stages, carried))
    else:
        _publish_after_commit(event_id_text, trace_id, first_stages, carried)
    return event_id_text


def _flow_after(admissions: dict[uuid.UUID, Any], runs: list[tuple[uuid.UUID, Pipeline]], event_id: uuid.UUID,
                trace_id: str) -> None:
    """Flow control's log lines (on commit), and the outcome of each run a singleton start cancelled."""
    for r, p in runs:
        admission = admissions.get(r)
        if admission is None:
            continue
        flow_lines.log_admission(admission, {"run_id": str(r), "event_id": str(event_id), "trace_id": trace_id,
                                             "pipeline": p.name})
        flow_lines.runs_cancelled(admission.replaced, p.name)


def _publish_after_commit(
    event_id: str, trace_id: str, first_stages: list[tuple[Any, str]], carried: dict[str, Any],
) -> None:
    publisher.publish_first_stages(event_id, trace_id, first_stages, carried)
