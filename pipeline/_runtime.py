"""Running one stage message: claim the stage, call the user's function, record the outcome, move
the run forward (publish the stages now ready, or end the run), and go on inline along a chain.

This runs for every stage message, so its reads and writes are a few precompiled statements
(`pipeline.stage_store`) batched with the other threads' by the process's group-commit writer,
and what a stage needs of its run (event, payload, parents' results, when the run started)
travels in the message when it is small. Every guarantee stays: a stage is claimed before it
runs, its outcome is committed before its message is acknowledged or anything is published or
logged, and a worker killed at any point leaves the store saying what to do again."""
from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from django.db import transaction
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import CurrentMessage, TimeLimit
from dramatiq.middleware.threading import Interrupt

from . import conf, _outcomes as outcomes, _redelivery as redelivery, _stage_store as stage_store
from . import _store_health as store_health, _writer as writer
from ._context import EventView, StageContext, batch_events
from ._definitions import Stage
from .flow import _admission as admission
from ._inflight import running_inline
from .logging import get_logger, redact_text
from .middleware._drain import draining
from ._publisher import publish_admitted, publish_ready
from ._run_info import JSON_OPTIONS as _JSON_OPTIONS, RunInfo
from ._sql import now as utcnow

log = get_logger("pipeline.runtime")
LEASE_MARGIN_SECONDS = 30
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
_local = threading.local()


def runs_ended() -> list[tuple[str, str, str]]:
    """(run id, pipeline, status) of the runs this message ended, once committed (for run-end middleware)."""
    return getattr(_local, "ended", [])


def execute_stage(stage: Stage, run_id: str) -> None:
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    message_id = message.message_id if message is not None else str(uuid.uuid4())
    _local.ended = []
    thread = threading.get_ident()
    first = redelivery.executing.setdefault(message_id, thread) == thread
    try:
        found = redelivery.inspect(message, run_id, WORKER_ID)
        if (holder := found.holder) is not None:
            log.info("stage.deferred", run_id=run_id, reason="redelivered while a live worker runs it", holder=holder,
                     retry_in_ms=redelivery.DEFER_MS)
            message.options[redelivery.HOLDER] = holder  # the copy checks again
            raise Retry(delay=redelivery.DEFER_MS)
        if redelivery.HOLDER in options:
            del options[redelivery.HOLDER]  # its holder is done or gone: this copy goes on
        _execute(stage, run_id, message, options, message_id, found.take_back)
    except Retry:  # the engine's own decision, already recorded (its cause may be an outage now over)
        raise
    except Exception as exc:
        if not store_health.outage.noticed(exc):
            raise
        # Nothing could be recorded (the claim, or a read): the message comes back after a pause (a Retry:
        # not a failed attempt, not dead-lettered, no traceback); `store.unavailable` was said once already.
        raise Retry(delay=store_health.retry_delay_ms(options.get("retries", 0))) from None
    finally:
        if first:
            redelivery.executing.pop(message_id, None)


def _execute(stage: Stage, run_id: str, message: Any, options: dict, message_id: str, take_back: str | None) -> None:
    info = RunInfo.from_message(run_id, stage.pipeline.name, options)
    if (claimed := admission.claim(stage, info, message, message_id, WORKER_ID, _lease(stage),
                                   options.get("results"), take_back)) is False:
        return  # flow control (pipeline/flow/) holds, throttles, folds, drops it, or it waits for a slot
    if claimed is None:
        if (stage := redelivery.not_claimed(stage, info, message_id)) is None:
            return
        # A redelivery of a message whose worker died in the middle of a chain it was running
        # inline: go on from the stage it held.
        claimed = stage_store.claim(stage, info, message_id, WORKER_ID, _lease(stage), None, take_back=take_back)
        if not isinstance(claimed, tuple):
            return
    attempt, results, started_run = claimed
    # Only the message's own stage (not one continued inline or resumed) retries and dead-letters with it.
    carrier = message is None or stage.actor_name == message.actor_name
    try:
        _run_chain(stage, info, message, message_id, attempt, results, started_run, carrier)
    finally:
        running_inline.pop(message_id, None)


def _run_chain(
    stage: Stage, info: RunInfo, message: Any, message_id: str, attempt: int, results: dict, started_run: bool,
    carrier: bool,
) -> None:
    if not carrier:
        running_inline[message_id] = stage.actor_name
    while True:
        structlog.contextvars.bind_contextvars(stage=stage.name, attempt=attempt, event_id=info.event_id,
                                               trace_id=info.trace_id, pipeline=info.pipeline)
        if started_run:
            log.info("run.started", run_id=info.run_id, pipeline=info.pipeline)
        started_run = False
        log.info("stage.started", attempt=attempt, worker=WORKER_ID)
        following = _attempt(stage, info, message, message_id, attempt, results, carrier)
        if following is None:
            return
        stage, results = following
        attempt, carrier = 1, False
        running_inline[message_id] = stage.actor_name
        _restart_time_limit(stage)


def _lease(stage: Stage) -> datetime:
    return utcnow() + timedelta(seconds=stage.timeout + LEASE_MARGIN_SECONDS)


def _attempt(
    stage: Stage, info: RunInfo, message: Any, message_id: str, attempt: int, results: dict, carrier: bool,
) -> tuple[Stage, dict] | None:
    """One attempt of a claimed stage; returns the next stage to run inline, if any."""
    ctx = StageContext(
        event=EventView(id=info.event_id, type=info.event_type or "", payload=info.payload or {},
                        occurred_at=info.occurred_at, trace_id=info.trace_id),
        run_id=info.run_id,
        pipeline=info.pipeline,
        stage=stage.name,
        attempt=attempt,
        results=results,
        log=structlog.get_logger(f"pipeline.stage.{stage.actor_name}"),
        batch=batch_events(info.run_id) if stage.pipeline.batch is not None else None,
    )
    started = time.perf_counter()
    try:
        result = stage.fn(ctx)
        # Results are stored and handed to later stages: they must be JSON.
        result_json = orjson.dumps(result, option=_JSON_OPTIONS).decode()
    except (Exception, Interrupt) as exc:  # Interrupt: the time limit or a worker shutdown
        _failed(stage, info, message, message_id, attempt, exc, (time.perf_counter() - started) * 1000, carrier)
        return None
    return _succeeded(stage, info, message_id, attempt, result, result_json,
                      (time.perf_counter() - started) * 1000)


def _inline_child(stage: Stage, children: list[Stage]) -> Stage | None:
    """The child to run in this thread right after this stage, if the chain is linear here."""
    if len(children) != 1 or not conf.get("PIPELINE_INLINE_CHAINS"):
        return None
    child = children[0]
    if len(child.after) != 1 or child.actor.queue_name != stage.actor.queue_name or admission.needs_own_message(child):
        return None
    return None if draining() else child


def _succeeded(
    stage: Stage, info: RunInfo, message_id: str, attempt: int, result: Any, result_json: str, duration_ms: float,
) -> tuple[Stage, dict] | None:
    pipeline = stage.pipeline
    children = pipeline.children(stage.name)
    inline = _inline_child(stage, children)
    record = stage_store.SuccessRecord(
        stage=stage, info=info, message_id=message_id, attempt=attempt, result_json=result_json,
        duration_ms=duration_ms, children=children, inline=inline, worker=WORKER_ID,
        inline_lease=_lease(inline) if inline is not None else None,
    )
    done = _write(record, info, "succeeded" if not children else None, lambda d: d.finished)
    if done is None:
        return _taken_over(attempt)
    log.info("stage.succeeded", attempt=attempt, duration_ms=round(duration_ms, 3), outcome="succeeded")
    if done.finished:
        total_ms = round(record.total_ms, 3)
        log.info("run.succeeded", run_id=info.run_id, pipeline=info.pipeline, duration_ms=total_ms,
                 stages=len(pipeline.stages), outcome="succeeded")
        _local.ended.append((info.run_id, info.pipeline, "succeeded"))
    publish_admitted(done.admitted)  # what waited for the slots it gave back (pipeline.flow)
    if done.ready:
        single = [c for c in done.ready if len(c.after) == 1]
        joins = [c for c in done.ready if len(c.after) > 1]
        for ready, results in ((single, {stage.name: result}), (joins, None)):  # a fan-in reads the store
            if ready:
                publish_ready(ready, info.run_id, info.event_id, info.trace_id, info.carried(results))
    if done.inline:
        return inline, {stage.name: result}
    return None


def _write(record: Any, info: RunInfo, may_end_as: str | None, ended: Any) -> Any:
    """Writes an outcome record; while the store is unreachable, waits for it (the stage's work is
    done: running it again would repeat its side effects). The message stays unacknowledged
    meanwhile, so a worker that dies waiting leaves it to be redelivered."""
    try:
        return _write_once(record, info, may_end_as, ended)
    except Exception as exc:
        if not store_health.outage.noticed(exc):
            raise
    return store_health.when_back(lambda: _write_once(record, info, may_end_as, ended))


def _write_once(record: Any, info: RunInfo, may_end_as: str | None, ended: Any) -> Any:
    """Through the group commit; when it may end the run and someone listens to its outcome, on
    this thread's connection, so the outcome event is written in the same transaction as the end."""
    if may_end_as is None or not outcomes.wanted(f"run.{may_end_as}", info.pipeline):
        return writer.run(record)
    with transaction.atomic():
        done = writer.run_direct(record)
        if done and ended(done) and not done.recovered:  # else it was written with the run's end
            outcomes.emit_outcome(info.run_id, may_end_as, info.pipeline)
    return done


def _failed(
    stage: Stage, info: RunInfo, message: Any, message_id: str, attempt: int, exc: BaseException,
    duration_ms: float, carrier: bool,
) -> None:
    now = utcnow()
    error = redact_text(f"{type(exc).__name__}: {exc}")
    trace_text = redact_text("".join(traceback.format_exception(exc, limit=30)))
    final = bool(stage.throws and isinstance(exc, stage.throws)) or attempt > stage.retries
    delay_ms = None
    if not final:
        _, delay_ms = compute_backoff(
            attempt - 1, factor=max(1, int(stage.backoff[0] * 1000)), max_backoff=int(stage.backoff[1] * 1000)
        )
    record = stage_store.FailureRecord(
        stage=stage, info=info, message_id=message_id, attempt=attempt, error=error, traceback=trace_text,
        error_type=type(exc).__name__, duration_ms=duration_ms, now=now, final=final, delay_ms=delay_ms,
    )
    canonical = {"attempt": attempt, "duration_ms": round(duration_ms, 3), "error_type": type(exc).__name__,
                 "error": error, "max_attempts": stage.retries + 1}
    done = _write(record, info, "failed" if final else None, lambda d: d.run_ended)
    if not done:
        return _taken_over(attempt)
    publish_admitted(done.admitted)  # what waited for the slots it gave back (pipeline.flow)
    if not final:
        log.info("stage.retrying", **canonical, outcome="retrying", retry_in_ms=delay_ms)
        if carrier:
            raise Retry(delay=delay_ms)
        # A stage continued inline retries as a message of its own (the carrier's stage succeeded).
        publish_ready([stage], info.run_id, info.event_id, info.trace_id, info.carried(None), delay_ms=delay_ms)
        return
    log.info("stage.failed", **canonical, outcome="failed")
    if done.run_ended:
        total_ms = round(record.total_ms, 3)
        log.info("run.failed", run_id=info.run_id, pipeline=info.pipeline, failed_stage=stage.name, error=error,
                 duration_ms=total_ms, outcome="failed", stages=len(stage.pipeline.stages))
        _local.ended.append((info.run_id, info.pipeline, "failed"))
    if message is not None and carrier:
        message.fail()  # dead-lettered too; the database keeps the failure for as long as the run


def _taken_over(attempt: int) -> None:
    log.warning("stage.outcome_dropped", attempt=attempt, reason="another message holds the stage; it records the outcome")


def _restart_time_limit(stage: Stage) -> None:
    """A stage continued inline gets its own time limit, counted from its start."""
    message = CurrentMessage.get_current_message()
    for middleware in stage.actor.broker.middleware if message is not None else ():
        if isinstance(middleware, TimeLimit):
            middleware.manager.add_timeout(threading.get_ident(), stage.timeout * 1000)
