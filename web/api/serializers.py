"""The JSON shapes of events, runs and stage runs in API responses."""
from __future__ import annotations

from typing import Any

from pipeline import Event, Run, StageRun, redact, registry, wait_reason


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def stage_json(stage: StageRun) -> dict[str, Any]:
    return {
        "stage": stage.stage,
        "status": stage.status,
        "attempts": stage.attempts,
        "enqueued_at": _iso(stage.enqueued_at),
        "started_at": _iso(stage.started_at),
        "finished_at": _iso(stage.finished_at),
        "duration_ms": stage.duration_ms,
        "result": stage.result,
        "error": stage.error or None,
        "attempt_log": [
            {k: v for k, v in entry.items() if k != "traceback"} for entry in (stage.attempt_log or [])
        ],
    }


def _stage_order(run: Run) -> dict[str, int]:
    try:
        return {name: i for i, name in enumerate(registry.get(run.pipeline).stages)}
    except Exception:
        return {}


def _waiting_for(run: Run) -> dict[str, Any] | None:
    waits = run.status == "waiting" or any(s.status == "waiting" for s in run.stages.all())
    reason = wait_reason(str(run.id)) if waits else None
    return None if reason is None else {**reason, "since": _iso(reason["since"])}


def run_json(run: Run, *, with_stages: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "run_id": str(run.id),
        "pipeline": run.pipeline,
        "status": run.status,
        "trigger": run.trigger,
        "event_id": str(run.event_id),
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_ms": run.duration_ms,
        "error": run.error or None,
        "replay_of": str(run.replay_of_id) if run.replay_of_id else None,
    }
    if with_stages:
        order = _stage_order(run)
        stages = sorted(run.stages.all(), key=lambda s: (order.get(s.stage, 1_000), s.id))
        data["stages"] = [stage_json(s) for s in stages]
        data["waiting_for"] = _waiting_for(run)
    return data


def event_json(event: Event) -> dict[str, Any]:
    return {
        "event_id": str(event.id),
        "type": event.type,
        "version": event.version,
        "payload": redact(event.payload),
        "occurred_at": _iso(event.occurred_at),
        "trace_id": event.trace_id,
        "idempotency_key": event.idempotency_key,
        "source": event.source,
        "priority": event.priority or None,
        "published_at": _iso(event.published_at),
        "runs": [run_json(r, with_stages=False) for r in event.runs.all().order_by("created_at")],
    }
