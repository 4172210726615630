"""Errors users see: each says what is wrong precisely enough to fix it."""
from __future__ import annotations

from typing import Any


class PipelineError(Exception):
    """Base class of the engine's errors."""


class DefinitionError(PipelineError):
    """A pipeline or stage declaration is invalid (raised at import time)."""


class EventError(PipelineError):
    """An event cannot be accepted; nothing was stored or published."""

    status_code = 400

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self)}


class UnknownEventType(EventError):
    def __init__(self, event_type: str, known: list[str]) -> None:
        self.event_type = event_type
        known_text = ", ".join(sorted(known)) or "none registered"
        super().__init__(f"unknown event type {event_type!r} (known: {known_text})")

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "type": self.event_type}


class InvalidPayload(EventError):
    def __init__(self, event_type: str, errors: list[dict[str, Any]]) -> None:
        self.event_type = event_type
        self.errors = errors
        details = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid payload for {event_type!r}: {details}")

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "type": self.event_type, "fields": self.errors}


class PayloadTooLarge(EventError):
    status_code = 413

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


class TransitionRefused(PipelineError):
    """An impossible state change (e.g. succeeded -> running) was asked for and refused."""


class StoreUnavailable(PipelineError):
    """Raised when the run store's database cannot be reached (refused, shut down, connection
    lost): nothing was recorded, the same call can be made again once it is back."""

    def __init__(self, cause: BaseException) -> None:
        self.error_type = type(cause).__name__
        super().__init__(f"the run store (database) is unreachable ({self.error_type}); nothing was recorded")
