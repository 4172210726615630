"""Completion events: when a run ends, the engine emits `run.succeeded`, `run.failed` or
`run.cancelled` through the ordinary `emit` path, in the same transaction as the run's final
state, so another pipeline (declared with `on="run.failed", of=["fulfil_order"]`) or a webhook
can react to it. Emitted only when something listens, so runs nobody watches pay nothing."""
from __future__ import annotations

from typing import Callable, Literal

from pydantic import BaseModel

from ._definitions import OUTCOME_TYPES, registry
from ._events import emit
from .flow import _lines as flow_lines
from .models import Run
from ._payloads import event_type


class RunOutcome(BaseModel):
    """The payload of `run.succeeded`, `run.failed` and `run.cancelled`: which run ended, and how."""

    pipeline: str
    run_id: str
    event_id: str
    status: Literal["succeeded", "failed", "cancelled"]  # the event type's own word
    trigger: str
    duration_ms: float | None = None
    error: str | None = None


for _type in OUTCOME_TYPES:
    event_type(_type, engine=True)(RunOutcome)

# Other listeners (the webhooks app) say whether they want an outcome: (event type, pipeline) -> bool.
_listeners: list[Callable[[str, str], bool]] = []


def add_outcome_listener(wants: Callable[[str, str], bool]) -> None:
    _listeners.append(wants)


# Observers (the webhooks app) see each outcome emitted, in the same transaction, right after it:
# (event type, payload, outcome event id) -> None. They may emit events of their own.
_observers: list[Callable[[str, dict, str], None]] = []


def add_outcome_observer(observe: Callable[[str, dict, str], None]) -> None:
    _observers.append(observe)


def _singleton_cancelled(run_id: str, pipeline: str) -> None:
    emit_outcome(run_id, "cancelled", pipeline)


flow_lines.cancelled_observers.append(_singleton_cancelled)  # (pipeline.flow: a singleton start cancelled it)


def wanted(outcome_type: str, pipeline: str) -> bool:
    declared = registry.pipelines.get(pipeline)
    if declared is None or not declared.emits_outcome:
        return False
    return registry.listens_to_outcome(outcome_type, pipeline) or any(w(outcome_type, pipeline) for w in _listeners)


def emit_outcome(run_id: str, status: str, pipeline: str | None = None) -> str | None:
    """Emits the run's outcome if anyone listens; call inside the transaction that ended the run.
    With the run's `pipeline` known, a run nobody listens to costs no query at all."""
    if pipeline is not None and not wanted(f"run.{status}", pipeline):
        return None
    run = Run.objects.filter(id=run_id).values_list(
        "pipeline", "event_id", "trigger", "duration_ms", "error", "finished_at", "event__trace_id"
    ).first()
    if run is None:
        return None
    pipeline, event_id, trigger, duration_ms, error, finished_at, trace_id = run
    outcome_type = f"run.{status}"
    if not wanted(outcome_type, pipeline):
        return None
    payload = {"pipeline": pipeline, "run_id": str(run_id), "event_id": str(event_id), "status": status,
               "trigger": trigger, "duration_ms": duration_ms, "error": error or None}
    outcome_id = emit(
        outcome_type,
        payload,
        idempotency_key=f"outcome:{run_id}:{status}:{finished_at.isoformat() if finished_at else ''}",
        trace_id=trace_id,
        source=f"run:{run_id}",
        engine=True,
    )
    for observe in _observers:
        observe(outcome_type, payload, outcome_id)
    return outcome_id
