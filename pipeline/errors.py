"""Errors users see: each says what is wrong precisely enough to fix it.

One hierarchy under `PipelineError`. The engine knows no transport: what HTTP status an error
becomes is `web/`'s business (`web/errors.py`), what exit code a command gives is the command's."""
from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """Base class of the engine's errors: `except PipelineError` catches every one of them."""


class DefinitionError(PipelineError):
    """Raised when a pipeline, stage or event type declaration is invalid (at import time, or
    when the app registry is checked once every app is loaded)."""


class EventError(PipelineError):
    """Raised when an event cannot be accepted; nothing was stored or published."""

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self)}


class UnknownEventType(EventError):
    """Raised when an event's type is not declared with `event_type` (the message lists those that are)."""

    def __init__(self, event_type: str, known: list[str]) -> None:
        self.event_type = event_type
        known_text = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown event type {event_type!r} (known: {known_text})")

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "type": self.event_type}


class InvalidPayload(EventError):
    """Raised when a payload does not fit its event type's schema; `errors` names each bad field."""

    def __init__(self, event_type: str, errors: list[dict[str, Any]]) -> None:
        self.event_type = event_type
        self.errors = errors
        details = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid payload for {event_type!r}: {details}")

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "type": self.event_type, "fields": self.errors}


class PayloadTooLarge(EventError):
    """Raised when a payload's JSON is larger than PIPELINE_MAX_PAYLOAD_BYTES."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"payload is {size} bytes, over the limit of {limit} bytes (PIPELINE_MAX_PAYLOAD_BYTES)")


class ReservedName(EventError, ValueError):
    """Raised when `emit` (or `POST /api/events`, `manage.py emit`) is given an event type or an
    idempotency key in the engine's namespace: outcome events, webhook deliveries and schedule
    fires are the engine's to emit, and their keys are how it keeps them unique."""

    def __init__(self, field: str, value: str, prefix: str) -> None:
        self.field, self.value, self.prefix = field, value, prefix
        what = "event type" if field == "type" else "idempotency key"
        super().__init__(f"{field} {value!r}: the {what}s starting with {prefix!r} are reserved for the engine")

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


class StoreUnavailable(PipelineError):
    """Raised when the run store's database cannot be reached (refused, shut down, connection
    lost): nothing was recorded, the same call can be made again once it is back."""

    def __init__(self, cause: BaseException) -> None:
        self.error_type = type(cause).__name__
        super().__init__(f"the run store (database) is unreachable ({self.error_type}); nothing was recorded")


class OperationRefused(PipelineError):
    """Raised when a run's state does not allow the operation asked for (replaying a run that has
    not failed, cancelling one that has finished); the message says why."""


class RunNotFound(PipelineError):
    """Raised when an operation names a run id the store does not hold."""


class BrokerUnavailable(PipelineError):
    """Raised when the broker cannot be reached or refuses the connection; the message says what
    to do, with the broker's address but never its credentials."""


class TraceUsageError(PipelineError):
    """Raised when `manage.py trace` is given input it cannot use (an id that is not one, no log
    files where it looks); the command exits with code 2."""
