"""Running one stage attempt: claim it, call the user's function, record the outcome, and
move the run forward (enqueue the stages now ready, or end the run)."""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
import uuid
from datetime import timedelta
from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.threading import Interrupt

from . import states
from .context import EventView, StageContext
from .definitions import Stage
from .logging import get_logger, redact_text
from .models import Run, RunStatus, StageRun, StageStatus
from .runs import enqueue_stage

log = get_logger("pipeline.runtime")

LEASE_MARGIN_SECONDS = 30
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def execute_stage(stage: Stage, run_id: str) -> None:
    message = CurrentMessage.get_current_message()
    message_id = message.message_id if message is not None else str(uuid.uuid4())
    now = timezone.now()
    lease_until = now + timedelta(seconds=stage.timeout + LEASE_MARGIN_SECONDS)
    if not states.claim_stage(run_id, stage.name, message_id, now, lease_until, WORKER_ID):
        _not_claimed(stage, run_id, message)
        return

    run = Run.objects.select_related("event").get(id=run_id)
    rows = {s.stage: s for s in StageRun.objects.filter(run_id=run_id).only("stage", "status", "result", "attempts", "attempt_log")}
    me = rows[stage.name]
    attempt = me.attempts
    structlog.contextvars.bind_contextvars(attempt=attempt, event_id=str(run.event_id), trace_id=run.event.trace_id)

    if run.status not in states.RUN_ACTIVE:
        # Cancelled or already failed: this stage must not start.
        states.move_stage(run_id, stage.name, StageStatus.CANCELLED, holder=message_id,
                          log_fields={"attempt": attempt, "reason": f"run {run.status}"}, finished_at=now)
        return
    if run.status == RunStatus.PENDING:
        states.move_run(run_id, RunStatus.RUNNING, started_at=now, log_fields={"pipeline": run.pipeline})

    log.info("stage.started", attempt=attempt, worker=WORKER_ID)
    ctx = StageContext(
        event=EventView(
            id=str(run.event_id),
            type=run.event.type,
            payload=run.event.payload,
            occurred_at=run.event.occurred_at,
            trace_id=run.event.trace_id,
        ),
        run_id=str(run_id),
        pipeline=run.pipeline,
        stage=stage.name,
        attempt=attempt,
        results={p: rows[p].result for p in stage.after if p in rows},
        log=structlog.get_logger(f"pipeline.stage.{stage.actor_name}"),
    )
    started = time.perf_counter()
    try:
        result = stage.fn(ctx)
        json.dumps(result)  # results are stored and handed to later stages: they must be JSON
    except (Exception, Interrupt) as exc:  # Interrupt: the time limit or a worker shutdown
        duration_ms = (time.perf_counter() - started) * 1000
        _failed(stage, run, me, message, message_id, attempt, exc, duration_ms)
        return
    duration_ms = (time.perf_counter() - started) * 1000
    _succeeded(stage, run, message_id, attempt, result, duration_ms)


def _not_claimed(stage: Stage, run_id: str, message: Any) -> None:
    """A duplicate or stale message: the stage is done, or another message holds it right now."""
    row = StageRun.objects.filter(run_id=run_id, stage=stage.name).values("status", "lease_until").first()
    if row is None:
        log.warning("stage.orphan_message", reason="no such stage run (run deleted or never created)")
        return
    if row["status"] == StageStatus.RUNNING and row["lease_until"] is not None:
        # Held by another live message: come back when its lease ends, in case its worker died.
        delay_ms = max(1000, int((row["lease_until"] - timezone.now()).total_seconds() * 1000) + 1000)
        log.info("stage.deferred", reason="held by another message", retry_in_ms=delay_ms)
        raise Retry(delay=delay_ms)
    log.info("stage.duplicate_skipped", status=row["status"])


def _succeeded(stage: Stage, run: Run, message_id: str, attempt: int, result: Any, duration_ms: float) -> None:
    now = timezone.now()
    ready: list[Stage] = []
    with transaction.atomic():
        # Lock the run so that sibling stages finishing at once see each other's success: the
        # fan-in stage after them is then created by exactly one of them.
        locked = Run.objects.select_for_update().filter(id=run.id).values_list("status", flat=True).first()
        if not states.move_stage(
            run.id, stage.name, StageStatus.SUCCEEDED, holder=message_id, result=result,
            finished_at=now, duration_ms=duration_ms, lease_until=None, error="", traceback="",
            log_fields={"attempt": attempt, "duration_ms": round(duration_ms, 3), "outcome": "succeeded"},
        ):
            return  # another message took the stage over; it records the outcome
        statuses = dict(StageRun.objects.filter(run_id=run.id).values_list("stage", "status"))
        if locked in states.RUN_ACTIVE:
            for child in stage.pipeline.children(stage.name):
                if child.name not in statuses and all(statuses.get(p) == StageStatus.SUCCEEDED for p in child.after):
                    ready.append(child)
            StageRun.objects.bulk_create([StageRun(run_id=run.id, stage=c.name, enqueued_at=now) for c in ready])
            done = sum(1 for s in statuses.values() if s == StageStatus.SUCCEEDED)
            if not ready and done == len(stage.pipeline.stages):
                total_ms = (now - (run.started_at or run.created_at)).total_seconds() * 1000
                states.move_run(
                    run.id, RunStatus.SUCCEEDED, finished_at=now, duration_ms=total_ms,
                    log_fields={"pipeline": run.pipeline, "duration_ms": round(total_ms, 3),
                                "stages": len(stage.pipeline.stages), "outcome": "succeeded"},
                )
        if ready:
            event_id, trace_id = str(run.event_id), run.event.trace_id
            transaction.on_commit(lambda: _enqueue_ready(ready, str(run.id), event_id, trace_id))


def _enqueue_ready(ready: list[Stage], run_id: str, event_id: str, trace_id: str) -> None:
    for child in ready:
        try:
            enqueue_stage(child, run_id=run_id, event_id=event_id, trace_id=trace_id)
        except Exception as exc:  # left pending: the relay publishes it again
            log.warning("stage.publish_failed", next_stage=child.name, error=f"{type(exc).__name__}: {exc}")


def _failed(
    stage: Stage, run: Run, me: StageRun, message: Any, message_id: str, attempt: int,
    exc: BaseException, duration_ms: float,
) -> None:
    now = timezone.now()
    error = redact_text(f"{type(exc).__name__}: {exc}")
    trace_text = redact_text("".join(traceback.format_exception(exc, limit=30)))
    entry = {
        "attempt": attempt,
        "error_type": type(exc).__name__,
        "error": error,
        "traceback": trace_text,
        "finished_at": now.isoformat(),
        "duration_ms": round(duration_ms, 3),
    }
    attempt_log = [*(me.attempt_log or []), entry]
    final = bool(stage.throws and isinstance(exc, stage.throws)) or attempt > stage.retries
    common = dict(error=error, traceback=trace_text, attempt_log=attempt_log, finished_at=now,
                  duration_ms=duration_ms, lease_until=None)
    canonical = {"attempt": attempt, "duration_ms": round(duration_ms, 3), "error_type": type(exc).__name__,
                 "error": error, "max_attempts": stage.retries + 1}
    if not final:
        _, delay_ms = compute_backoff(
            attempt - 1, factor=max(1, int(stage.backoff[0] * 1000)), max_backoff=int(stage.backoff[1] * 1000)
        )
        if states.move_stage(run.id, stage.name, StageStatus.RETRYING, holder=message_id,
                             next_attempt_at=now + timedelta(milliseconds=delay_ms),
                             log_fields={**canonical, "outcome": "retrying", "retry_in_ms": delay_ms}, **common):
            raise Retry(delay=delay_ms)
        return
    with transaction.atomic():
        if not states.move_stage(run.id, stage.name, StageStatus.FAILED, holder=message_id,
                                 log_fields={**canonical, "outcome": "failed"}, **common):
            return
        total_ms = (now - (run.started_at or run.created_at)).total_seconds() * 1000
        states.move_run(
            run.id, RunStatus.FAILED, finished_at=now, duration_ms=total_ms,
            error=f"stage {stage.name}: {error}",
            log_fields={"pipeline": run.pipeline, "failed_stage": stage.name, "error": error,
                        "duration_ms": round(total_ms, 3), "outcome": "failed",
                        "stages": len(stage.pipeline.stages)},
        )
    if message is not None:
        message.fail()  # dead-lettered too; the database keeps the failure for as long as the run
