"""Event types, their schemas, and `emit`: the one way work enters the system.

An emitted event is written together with its runs in the caller's transaction (the outbox);
its first stages are published only after that transaction commits."""
from __future__ import annotations

import uuid
from typing import Any, Callable, TypeVar

import orjson
import pydantic
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import conf, tracing
from .definitions import Pipeline, registry
from .errors import InvalidPayload, PayloadTooLarge, UnknownEventType
from .logging import get_logger, info_on_commit
from .web import linked_trace_id

log = get_logger("pipeline.events")

SchemaT = TypeVar("SchemaT", bound=type[pydantic.BaseModel])
schemas: dict[str, type[pydantic.BaseModel]] = {}


class _AnyPayload(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


def event_type(name: str) -> Callable[[SchemaT], SchemaT]:
    """Registers a pydantic model as the schema of the event type `name`."""

    def register(model: SchemaT) -> SchemaT:
        if name in schemas and schemas[name] is not model:
            raise ValueError(f"event type {name!r} already has the schema {schemas[name].__name__}")
        schemas[name] = model
        return model

    return register


def validate(type_name: str, payload: Any) -> dict[str, Any]:
    """The payload as it will be stored, or the precise reason it cannot be."""
    schema = schemas.get(type_name)
    if schema is None:
        raise UnknownEventType(type_name, list(schemas))
    if isinstance(payload, pydantic.BaseModel):
        payload = payload.model_dump(mode="json")
    if not isinstance(payload, dict):
        raise InvalidPayload(type_name, [{"field": "(payload)", "message": "must be a JSON object"}])
    try:
        data = schema.model_validate(payload).model_dump(mode="json")
    except pydantic.ValidationError as exc:
        raise InvalidPayload(
            type_name,
            [{"field": ".".join(str(p) for p in e["loc"]) or "(payload)", "message": e["msg"]} for e in exc.errors()],
        ) from None
    size = len(orjson.dumps(data))  # compact JSON, UTF-8 bytes
    limit = conf.get("PIPELINE_MAX_PAYLOAD_BYTES")
    if size > limit:
        raise PayloadTooLarge(size, limit)
    return data


def emit(
    type: str,
    payload: Any,
    *,
    idempotency_key: str | None = None,
    trace_id: str | None = None,
    source: str = "",
) -> str:
    """Validates and records an event, starts one run per subscribed pipeline, returns the event id.

    Inside `transaction.atomic()` nothing is published unless that transaction commits. With an
    `idempotency_key`, a repeated emit returns the first event's id and starts nothing."""
    data = validate(type, payload)
    return _record(type, data, registry.subscribed_to(type, data), idempotency_key, trace_id, source, "event")


def validate_start_payload(pipeline_name: str, payload: Any) -> dict[str, Any]:
    """The payload `start(pipeline_name, payload)` would store, or the reason it cannot."""
    pipeline = registry.get(pipeline_name)
    schemas.setdefault(pipeline.event_type, _AnyPayload)
    return validate(pipeline.event_type, payload or {})


def start(
    pipeline_name: str,
    payload: Any = None,
    *,
    trigger: str = "manual",
    idempotency_key: str | None = None,
    trace_id: str | None = None,
) -> str:
    """Starts one pipeline directly (schedules, the CLI), as an event of its type that only it receives."""
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
) -> str:
    from django.db import connection

    from . import writer

    trace_id = trace_id or tracing.current_trace_id() or tracing.new_trace_id()
    event_id = uuid.uuid4()
    now = timezone.now()
    runs = [(uuid.uuid4(), p) for p in pipelines]
    payload_json = orjson.dumps(data)  # serialized once: stored, and its size decides what is logged and carried
    payload_text, payload_size = payload_json.decode(), len(payload_json)
    linked = linked_trace_id()  # an untrusted traceparent that came with the request (pipeline.web)
    # The rest of the trace context that came with the request: the flags as received, tracestate.
    incoming = tracing.incoming_for(trace_id)
    flags, tracestate = (incoming.flags, incoming.tracestate) if incoming else (tracing.DEFAULT_FLAGS, "")

    def write(tx: writer.Tx) -> None:
        # The event (the outbox row), its runs and their first stages, in the caller's transaction.
        q, d = tx.q, tx.d
        key, when = d.uuid(event_id), d.dt(now)
        # Nothing here is read back: the rows go into the batch's multi-row INSERTs.
        tx.insert_later(q.event_head, q.event_row, (key, type_name, payload_text, when, trace_id, idempotency_key,
                                                      source, linked, flags, tracestate))
        for r, p in runs:
            run_key = d.uuid(r)
            tx.insert_later(q.run_head, q.run_row, (run_key, key, type_name, p.name, trigger, when))
            for s in p.roots:
                tx.insert_later(q.root_head, q.root_row, (run_key, s.name, when))

    # Inside the caller's transaction, the rows commit (or roll back) with the caller's work;
    # otherwise they go in the process's next group commit, shared with other threads' emits.
    in_caller_transaction = writer.in_transaction()
    try:
        if in_caller_transaction:
            writer.run_direct(write)
        else:
            writer.run(write)
    except (IntegrityError, connection.Database.IntegrityError):
        if idempotency_key is None:
            raise
        from .models import Event

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
    first_stages = [(stage, str(r)) for r, p in runs for stage in p.roots]
    # What the first stages would otherwise read back: the event, and its payload when small.
    carried: dict[str, Any] = {"event_type": type_name, "occurred_at": now.isoformat()}
    if payload_size <= conf.get("PIPELINE_MESSAGE_CARRY_BYTES"):
        carried["payload"] = data
    if in_caller_transaction:
        transaction.on_commit(lambda: _publish_after_commit(event_id_text, trace_id, first_stages, carried))
    else:
        _publish_after_commit(event_id_text, trace_id, first_stages, carried)
    return event_id_text


def _publish_after_commit(event_id: str, trace_id: str, first_stages: list, carried: dict) -> None:
    from .publisher import publish_first_stages

    publish_first_stages(event_id, trace_id, first_stages, carried)
