"""Declaring event types and checking payloads against them, before anything is stored.

Model-free, so it can run while Django loads its apps: the scheduler checks a schedule's payload
when the schedule is declared, and `pipelines.py` modules declare their types on import. What is
declared lives in `schemas`; `events.emit` stores what passed."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import orjson
import pydantic

from . import conf
from ._definitions import registry
from .errors import DefinitionError, InvalidPayload, PayloadTooLarge, ReservedName, UnknownEventType
from ._schemas import schemas

SchemaT = TypeVar("SchemaT", bound=type[pydantic.BaseModel])

# The engine's namespace. Event types: run outcomes (run.succeeded...), webhook deliveries
# (webhook.delivery), and `stage.` kept free as the engine's own log vocabulary. Idempotency keys:
# schedule fires (schedule:<name>@<time>), outcomes (outcome:<run>:...), deliveries (webhook:...).
# Callers of `emit` cannot use them, so an API client cannot forge an outcome, get a body signed
# with a subscription's secret, or suppress a scheduled run by taking its key first.
RESERVED_TYPE_PREFIXES = ("run.", "stage.", "webhook.")
RESERVED_KEY_PREFIXES = ("schedule:", "outcome:", "webhook:")


def reserved(type_name: str, idempotency_key: str | None) -> ReservedName | None:
    if type_name.startswith(RESERVED_TYPE_PREFIXES):
        return ReservedName("type", type_name, next(p for p in RESERVED_TYPE_PREFIXES if type_name.startswith(p)))
    if idempotency_key is not None and idempotency_key.startswith(RESERVED_KEY_PREFIXES):
        prefix = next(p for p in RESERVED_KEY_PREFIXES if idempotency_key.startswith(p))
        return ReservedName("idempotency_key", idempotency_key, prefix)
    return None


class _AnyPayload(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


def event_type(name: str, *, engine: bool = False) -> Callable[[SchemaT], SchemaT]:
    """Registers a pydantic model as the schema of the event type `name`. Names in the engine's
    namespace (RESERVED_TYPE_PREFIXES) are refused unless `engine` (the engine's own types)."""
    refused = None if engine or not isinstance(name, str) else reserved(name, None)
    if refused is not None:
        raise DefinitionError(f"event type {name!r}: names starting with {refused.prefix!r} are the engine's; "
                              f"choose another name")

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


def validate_start_payload(pipeline_name: str, payload: Any) -> dict[str, Any]:
    """The payload `start(pipeline_name, payload)` would store, or the reason it cannot."""
    pipeline = registry.get(pipeline_name)
    schemas.setdefault(pipeline.event_type, _AnyPayload)
    return validate(pipeline.event_type, payload or {})
