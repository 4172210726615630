"""Running one stage attempt: claim it, call the user's function, record the outcome, and
move the run forward (enqueue the stages now ready, or end the run).

This runs for every stage message, so it keeps to a few statements: a claim that returns the
attempt number, one read of the run and its event, the parents' results when there are
parents, and one short transaction for the outcome."""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
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
_RUN_FIELDS = ("status", "pipeline", "started_at", "created_at", "event_id", "event__type", "event__payload",
               "event__occurred_at", "event__trace_id")


@dataclass
class _Run:
    id: str
    status: str
    pipeline: str
    started_at: datetime | None
    created_at: datetime
    event_id: str
    event_type: str
    payload: dict
    occurred_at: datetime
    trace_id: str

    def elapsed_ms(self, now: datetime) -> float:
        return (now - (self.started_at or self.created_at)).total_seconds() * 1000


def execute_stage(stage: Stage, run_id: str) -> None:
    message = CurrentMessage.get_current_message()
    message_id = message.message_id if message is not None else str(uuid.uuid4())
    now = timezone.now()
    lease_until = now + timedelta(seconds=stage.timeout + LEASE_MARGIN_SECONDS)
    attempt = states.claim_stage(run_id, stage.name, message_id, now, lease_until, WORKER_ID)
    if attempt is None:
        _not_claimed(stage, run_id)
        return
    row = Run.objects.filter(id=run_id).values_list(*_RUN_FIELDS).first()
    if row is None:
        log.warning("stage.orphan_message", reason="the run was deleted")
        return
    run = _Run(str(run_id), *row[:4], str(row[4]), *row[5:])
    structlog.contextvars.bind_contextvars(attempt=attempt, event_id=run.event_id, trace_id=run.trace_id)

    if run.status not in states.RUN_ACTIVE:
        # Cancelled or already failed: this stage must not start.
        states.move_stage(run_id, stage.name, StageStatus.CANCELLED, holder=message_id, attempt=attempt,
                          log_fields={"attempt": attempt, "reason": f"run {run.status}"}, finished_at=now)
        return
    if run.status == RunStatus.PENDING:
        if states.move_run(run_id, RunStatus.RUNNING, sources=[RunStatus.PENDING], started_at=now,
                           log_fields={"pipeline": run.pipeline}):
            run.started_at = now
    results = (
        dict(StageRun.objects.filter(run_id=run_id, stage__in=stage.after).values_list("stage", "result"))
        if stage.after else {}
    )

    log.info("stage.started", attempt=attempt, worker=WORKER_ID)
    ctx = StageContext(
        event=EventView(id=run.event_id, type=run.event_type, payload=run.payload, occurred_at=run.occurred_at,
                        trace_id=run.trace_id),
        run_id=run.id,
        pipeline=run.pipeline,
        stage=stage.name,
        attempt=attempt,
        results=results,
        log=structlog.get_logger(f"pipeline.stage.{stage.actor_name}"),
    )
    started = time.perf_counter()
    try:
        result = stage.fn(ctx)
        json.dumps(result)  # results are stored and handed to later stages: they must be JSON
    except (Exception, Interrupt) as exc:  # Interrupt: the time limit or a worker shutdown
        _failed(stage, run, message, message_id, attempt, exc, (time.perf_counter() - started) * 1000)
        return
    _succeeded(stage, run, message_id, attempt, result, (time.perf_counter() - started) * 1000)


def _not_claimed(stage: Stage, run_id: str) -> None:
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


def _succeeded(stage: Stage, run: _Run, message_id: str, attempt: int, result: Any, duration_ms: float) -> None:
    now = timezone.now()
    pipeline = stage.pipeline
    children = pipeline.children(stage.name)
    # Only a fan-in after this stage, or the end of a pipeline with several last stages, needs
    # to see the other stages' states; then the run row is locked so that siblings finishing at
    # once see each other's success and exactly one of them starts what comes next.
    needs_view = any(len(c.after) > 1 for c in children) or (not children and len(pipeline.sinks) > 1)
    canonical = {"attempt": attempt, "duration_ms": round(duration_ms, 3), "outcome": "succeeded"}
    with transaction.atomic():
        run_status = None
        if needs_view:
            run_status = Run.objects.select_for_update().filter(id=run.id).values_list("status", flat=True).first()
        if not states.move_stage(run.id, stage.name, StageStatus.SUCCEEDED, holder=message_id, attempt=attempt,
                                 result=result,
                                 finished_at=now, duration_ms=duration_ms, lease_until=None, error="", traceback="",
                                 log_fields=canonical):
            return  # another message took the stage over; it records the outcome
        if needs_view:
            if run_status not in states.RUN_ACTIVE:
                return
            statuses = dict(StageRun.objects.filter(run_id=run.id).values_list("stage", "status"))
            ready = [c for c in children
                     if c.name not in statuses and all(statuses.get(p) == StageStatus.SUCCEEDED for p in c.after)]
            finished = not ready and sum(s == StageStatus.SUCCEEDED for s in statuses.values()) == len(pipeline.stages)
        else:
            # Every child has this stage as its only parent: all of them are ready now, unless the
            # run was cancelled (or failed in another branch) while this stage ran.
            active = not children or (
                Run.objects.filter(id=run.id).values_list("status", flat=True).first() in states.RUN_ACTIVE
            )
            ready = children if active else []
            finished = not children  # the single last stage: every other stage precedes it
        if ready:
            StageRun.objects.bulk_create([StageRun(run_id=run.id, stage=c.name, enqueued_at=now) for c in ready],
                                        ignore_conflicts=True)
            transaction.on_commit(lambda: _enqueue_ready(ready, run.id, run.event_id, run.trace_id))
        if finished:
            total_ms = run.elapsed_ms(now)
            states.move_run(
                run.id, RunStatus.SUCCEEDED, finished_at=now, duration_ms=total_ms,
                log_fields={"pipeline": run.pipeline, "duration_ms": round(total_ms, 3),
                            "stages": len(pipeline.stages), "outcome": "succeeded"},
            )


def _enqueue_ready(ready: list[Stage], run_id: str, event_id: str, trace_id: str) -> None:
    for child in ready:
        try:
            enqueue_stage(child, run_id=run_id, event_id=event_id, trace_id=trace_id)
        except Exception as exc:  # left pending: the relay publishes it again
            log.warning("stage.publish_failed", next_stage=child.name, error=f"{type(exc).__name__}: {exc}")


def _failed(
    stage: Stage, run: _Run, message: Any, message_id: str, attempt: int, exc: BaseException, duration_ms: float,
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
    previous = StageRun.objects.filter(run_id=run.id, stage=stage.name).values_list("attempt_log", flat=True).first()
    attempt_log = [*(previous or []), entry]
    final = bool(stage.throws and isinstance(exc, stage.throws)) or attempt > stage.retries
    common = dict(error=error, traceback=trace_text, attempt_log=attempt_log, finished_at=now,
                  duration_ms=duration_ms, lease_until=None)
    canonical = {"attempt": attempt, "duration_ms": round(duration_ms, 3), "error_type": type(exc).__name__,
                 "error": error, "max_attempts": stage.retries + 1}
    if not final:
        _, delay_ms = compute_backoff(
            attempt - 1, factor=max(1, int(stage.backoff[0] * 1000)), max_backoff=int(stage.backoff[1] * 1000)
        )
        if states.move_stage(run.id, stage.name, StageStatus.RETRYING, holder=message_id, attempt=attempt,
                             next_attempt_at=now + timedelta(milliseconds=delay_ms),
                             log_fields={**canonical, "outcome": "retrying", "retry_in_ms": delay_ms}, **common):
            raise Retry(delay=delay_ms)
        return
    with transaction.atomic():
        if not states.move_stage(run.id, stage.name, StageStatus.FAILED, holder=message_id, attempt=attempt,
                                 log_fields={**canonical, "outcome": "failed"}, **common):
            return
        total_ms = run.elapsed_ms(now)
        states.move_run(
            run.id, RunStatus.FAILED, finished_at=now, duration_ms=total_ms,
            error=f"stage {stage.name}: {error}",
            log_fields={"pipeline": run.pipeline, "failed_stage": stage.name, "error": error,
                        "duration_ms": round(total_ms, 3), "outcome": "failed",
                        "stages": len(stage.pipeline.stages)},
        )
    if message is not None:
        message.fail()  # dead-lettered too; the database keeps the failure for as long as the run
