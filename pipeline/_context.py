"""What a stage function receives."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, cast

import pydantic
from typing_extensions import TypeVar

from .models import Event, Run
from ._schemas import schemas
from ._statuses import RunStatus
from ._tracing import DEFAULT_FLAGS, traceparent

# The event's schema, for type checkers: `def charge(ctx: StageContext[OrderPlaced])` makes
# `ctx.event.data` an `OrderPlaced`; a bare `StageContext` means any pydantic model.
DataT = TypeVar("DataT", bound=pydantic.BaseModel, default=pydantic.BaseModel)


@dataclass(frozen=True)
class EventView(Generic[DataT]):
    """The event that started the run. `payload` is the stored JSON object; `data` is the same
    payload validated into the event type's pydantic model (built on first use)."""

    id: str
    type: str
    payload: dict[str, Any]
    occurred_at: datetime
    trace_id: str

    @cached_property
    def data(self) -> DataT:
        """The payload as an instance of the schema registered for the event's type (with
        `event_type`); for a pipeline started by hand or by a schedule, a model holding the payload's
        fields. Raises pydantic's ValidationError if the schema no longer accepts the stored payload."""
        schema = schemas.get(self.type)
        if schema is None:
            return cast(DataT, _Payload.model_validate(self.payload))
        return cast(DataT, schema.model_validate(self.payload))


class _Payload(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


@dataclass
class StageContext(Generic[DataT]):
    """The event, the run's ids, this attempt, and the results of the stages this one runs after.

    `idempotency_key` is stable across retries and redeliveries of this stage in this run: pass
    it to external systems so a repeated call has no second effect."""

    event: EventView[DataT]
    run_id: str
    pipeline: str
    stage: str
    attempt: int
    results: dict[str, Any]
    log: Any
    # A batching pipeline's run (`Pipeline(batch=Batch(...))`): the events of its batch, oldest first.
    batch: list[EventView] | None = None
    _cancel_checked_at: float = field(default=0.0, repr=False)
    _cancelled: bool = field(default=False, repr=False)
    _trace_rest: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.stage}"

    @property
    def trace_id(self) -> str:
        return self.event.trace_id

    def trace_headers(self) -> dict[str, str]:
        """HTTP headers that continue this run's trace in a call to another service: a version-00
        `traceparent` (this trace, a new span, the flags the trace came with) and, when one came,
        `tracestate` unchanged. The flags and tracestate are read from the event once."""
        if self._trace_rest is None:
            row = Event.objects.filter(id=self.event.id).values_list("trace_flags", "tracestate").first()
            self._trace_rest = row or (DEFAULT_FLAGS, "")
        flags, state = self._trace_rest
        headers = {"traceparent": traceparent(self.trace_id, flags=flags)}
        if state:
            headers["tracestate"] = state
        return headers

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled; long stages check it and return early. Reads the
        database at most twice a second."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._cancel_checked_at >= 0.5:
            self._cancel_checked_at = now
            status = Run.objects.filter(id=self.run_id).values_list("status", flat=True).first()
            self._cancelled = status == RunStatus.CANCELLED
        return self._cancelled


def batch_events(run_id: str) -> list[EventView]:
    """The events of the batch a run carries (pipeline/flow/_windows.py), oldest first."""
    from .flow._windows import batch_of  # the models: only once the app registry is ready

    ids = batch_of(run_id)
    rows = {str(e.id): e for e in Event.objects.filter(id__in=[i for i, _ in ids])}
    return [EventView(id=i, type=rows[i].type, payload=rows[i].payload, occurred_at=rows[i].occurred_at,
                      trace_id=rows[i].trace_id) for i, _ in ids if i in rows]
