"""The flow gate: what a gated stage message (`Stage.gated`) passes before its stage is
claimed. First stages of a pipeline with `debounce`/`batch` go through its window
(`pipeline.flow._windows`); then the pipeline's rate limit (first stages) and the stage's own
(`pipeline.flow._rate`). A message that may not start now is published again with a delay and
this delivery ends: no worker thread waits, and a long wait goes in hops
(`PIPELINE_MAX_HELD_DELAY_SECONDS`), so no delivery stays unacknowledged past RabbitMQ's
`consumer_timeout`.

Log lines: `flow.waiting` (held or throttled), `flow.released` (it goes on after waiting),
`flow.dropped` (not run: rate limit in drop mode, or debounced), each with `rule` and `key`."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction

from .. import _outcomes as outcomes, _states as states
from ..logging import get_logger
from ..models import Run, RunStatus, StageStatus
from .._publisher import enqueue_stage
from .._sql import now as utcnow
from . import _rate as rate, _windows as windows
from ._keys import key_of

if TYPE_CHECKING:
    from .._definitions import Stage
    from .._run_info import RunInfo

log = get_logger("pipeline.flow")

WAITED = "flow_waited"  # message option: the rule this message waited for (it was throttled or held)
WAITED_KEY = "flow_key"  # message option: ...and the key it waited under


def admit(stage: "Stage", info: "RunInfo", message: Any) -> datetime | bool:
    """False when this delivery is done (held, throttled, folded or dropped); else True, or the
    time the rate limit admitted the stage (recorded as its `started_at`)."""
    options = message.options if message is not None else {}
    pipeline = stage.pipeline
    _load_event(info)
    ids = {"run_id": info.run_id, "event_id": info.event_id, "trace_id": info.trace_id, "pipeline": info.pipeline}
    root = not stage.after
    window = pipeline.debounce or pipeline.batch
    if root and window is not None and not _window(stage, info, message, options, window, ids):
        return False
    admitted: datetime | bool = True
    rules = [(pipeline.name, pipeline.rate_limit)] if root and pipeline.rate_limit is not None else []
    if stage.rate_limit is not None:
        rules.append((stage.actor_name, stage.rate_limit))
    for name, rule in rules:
        key = key_of(rule.key, info.payload or {})
        decision = rate.acquire(name, key, rule)
        if not decision.admitted:
            _refused(stage, info, message, rule, key, decision, ids)
            return False
        admitted = decision.now
    waited = options.get(WAITED)
    if waited:
        log.info("flow.released", rule=waited, key=options.get(WAITED_KEY), stage=stage.name, **ids)
    return admitted


def _load_event(info: "RunInfo") -> None:
    """The payload and event time, when the message did not carry them (large payloads)."""
    if info.payload is not None and info.occurred_at is not None:
        return
    event_id, payload, occurred = Run.objects.filter(id=info.run_id).values_list(
        "event_id", "event__payload", "event__occurred_at").first() or (None, {}, utcnow())
    info.payload = payload if info.payload is None else info.payload
    info.occurred_at = occurred if info.occurred_at is None else info.occurred_at
    info.event_id = info.event_id or str(event_id or "")


def _again(stage: "Stage", message: Any, delay_ms: int, options: dict) -> None:
    """This message again after `delay_ms` (its queue, so its priority, unchanged)."""
    stage.actor.broker.enqueue(message.copy(options=options), delay=max(1, delay_ms))


def _window(stage: "Stage", info: "RunInfo", message: Any, options: dict, rule: Any, ids: dict) -> bool:
    kind = "debounce" if stage.pipeline.debounce is not None else "batch"
    key = key_of(rule.key, info.payload or {})
    got = windows.admit(stage.pipeline, kind, info.run_id, info.event_id, info.occurred_at, key,
                        held=bool(options.get(windows.HELD)))
    if got.gone:
        log.info("flow.skipped_message", rule=kind, key=key, **ids, reason="its run is over (folded or ended)")
        return False
    for folded, by in got.superseded:
        log.info("flow.dropped", rule=kind, key=key, **_ids_of(folded, info.pipeline), superseded_by=by)
    for taken in got.batched:  # late events this due batch took in: the same line as one joining on time
        log.info("flow.waiting", rule=kind, key=key, **_ids_of(taken, info.pipeline), batch_run_id=info.run_id,
                 batch_size=got.size)
    if got.folded_into is not None:
        if kind == "debounce":
            log.info("flow.dropped", rule=kind, key=key, **ids, superseded_by=got.folded_into)
        else:
            log.info("flow.waiting", rule=kind, key=key, **ids, batch_run_id=got.folded_into, batch_size=got.size)
        if got.publish_leader:
            _publish_leader(stage, got.publish_leader, kind, key)
        return False
    if got.proceed:
        if options.get(windows.HELD):
            options[WAITED], options[WAITED_KEY] = kind, key
        return True
    if message is None:
        raise RuntimeError(f"{stage.actor_name}: a {kind} window needs a broker message to hold")
    log.info("flow.waiting", rule=kind, key=key, **ids, due_in_ms=got.due_in_ms, events=got.size)
    _again(stage, message, got.due_in_ms, {windows.HELD: True, WAITED: kind, WAITED_KEY: key})
    return False


def _ids_of(run_id: str, pipeline: str) -> dict:
    """Another run's ids, for a line about it (a debounced leader, a full batch's run)."""
    event_id, trace_id = Run.objects.filter(id=run_id).values_list("event_id", "event__trace_id").first()
    return {"run_id": run_id, "event_id": str(event_id), "trace_id": trace_id, "pipeline": pipeline}


def _publish_leader(stage: "Stage", run_id: str, kind: str, key: str) -> None:
    """A full batch: its run's first stage goes now (its held message, due later, finds it started)."""
    ids = _ids_of(run_id, stage.pipeline.name)
    log.info("flow.released", rule=kind, key=key, **ids, reason="batch full")
    enqueue_stage(stage, run_id=run_id, event_id=ids["event_id"], trace_id=ids["trace_id"],
                  carried={windows.HELD: True, "priority": stage.pipeline.priority})


def _refused(stage: "Stage", info: "RunInfo", message: Any, rule: Any, key: str, decision: rate.Decision,
             ids: dict) -> None:
    if decision.retry_at is None:  # drop mode: recorded, the run ends cancelled
        error = f"dropped by rate limit ({rule.limit} per {rule.per} s, key {key})"
        with transaction.atomic():
            states.move_stage(info.run_id, stage.name, StageStatus.CANCELLED, finished_at=decision.now,
                              error=error, quiet_refusal=True)
            fields = {k: v for k, v in ids.items() if k != "run_id"}
            if states.move_run(info.run_id, RunStatus.CANCELLED, finished_at=decision.now, error=error,
                               log_fields={**fields, "reason": error}):
                outcomes.emit_outcome(info.run_id, RunStatus.CANCELLED, info.pipeline)
        log.info("flow.dropped", rule=rule.rule, key=key, stage=stage.name, **ids)
        return
    if message is None:
        raise RuntimeError(f"{stage.actor_name}: a throttled stage needs a broker message to wait with")
    delay_ms = int((decision.retry_at - decision.now).total_seconds() * 1000) + 1
    states.move_stage(info.run_id, stage.name, StageStatus.THROTTLED, next_attempt_at=decision.retry_at,
                      quiet_refusal=True)
    log.info("flow.waiting", rule=rule.rule, key=key, stage=stage.name, retry_in_ms=delay_ms, **ids)
    _again(stage, message, delay_ms, {WAITED: rule.rule, WAITED_KEY: key})


__all__ = ["admit"]
