"""One fire of a schedule: apply its overlap policy, start the run (never do the work here),
and record the fire. Used by the leader's APScheduler jobs, catch-up, trigger-now and backfill."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import dramatiq
import structlog
from django.db.models import Q

from pipeline import ACTIVE_RUN_STATUSES, Run, get_logger, new_trace_id, start

from .models import ScheduleRecord
from .timing import fire_key

log = get_logger("schedules.firing")


def _start(record: ScheduleRecord, key: str, trigger: str, trace_id: str) -> dict[str, Any]:
    spec = record.spec()
    if spec.pipeline:
        event_id = start(spec.pipeline, spec.payload, trigger=trigger, idempotency_key=key, trace_id=trace_id,
                         engine=True)
        run = Run.objects.filter(event_id=event_id, replay_of__isnull=True).only("id").first()
        return {"event_id": event_id, "run_id": str(run.id) if run else None}
    actor = dramatiq.get_broker().get_actor(spec.actor)
    message = actor.send_with_options(kwargs=spec.payload, trace_id=trace_id, trigger=trigger)
    return {"message_id": message.message_id}


def fire(name: str, fire_time: datetime, *, reason: str = "schedule", check_overlap: bool = True) -> dict[str, Any] | None:
    """Fires `name` for `fire_time`; returns what it started, or None when a policy said not to."""
    record = ScheduleRecord.objects.select_related("last_run").filter(name=name).first()
    if record is None:
        return None
    fire_iso = fire_time.astimezone(timezone.utc).isoformat()
    trace_id = new_trace_id()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(trace_id=trace_id, schedule_id=name, fire_time=fire_iso)
    try:
        if record.paused and reason in ("schedule", "catch_up"):
            log.info("schedule.skipped", reason="paused")
            return None
        spec = record.spec()
        if (check_overlap and spec.overlap == "buffer_one" and record.buffered_fire_at is not None
                and not (record.last_run and record.last_run.status in ACTIVE_RUN_STATUSES)):
            # The run it waited for has ended: the buffered fire goes first, this one queues behind it.
            fire(name, record.buffered_fire_at, reason="buffered", check_overlap=False)
            record = ScheduleRecord.objects.select_related("last_run").get(name=name)
            structlog.contextvars.bind_contextvars(trace_id=trace_id, schedule_id=name, fire_time=fire_iso)
        if check_overlap and spec.overlap != "allow" and record.last_run and record.last_run.status in ACTIVE_RUN_STATUSES:
            if spec.overlap == "skip":
                ScheduleRecord.objects.filter(name=name).update(last_fire_at=fire_time)
                log.info("schedule.skipped", reason="overlap", running_run_id=str(record.last_run_id))
                return None
            ScheduleRecord.objects.filter(name=name, buffered_fire_at__isnull=True).update(buffered_fire_at=fire_time)
            ScheduleRecord.objects.filter(name=name).update(last_fire_at=fire_time)
            log.info("schedule.buffered", running_run_id=str(record.last_run_id))
            return None
        key = fire_key(name, fire_time) if reason != "manual" else f"schedule:{name}@manual:{uuid.uuid4()}"
        started = _start(record, key, f"schedule:{name}@{fire_iso}", trace_id)
        delay_ms = (datetime.now(timezone.utc) - fire_time).total_seconds() * 1000
        updates: dict[str, Any] = {}
        if started.get("run_id"):
            updates["last_run_id"] = started["run_id"]
        if reason in ("schedule", "catch_up", "buffered"):
            ScheduleRecord.objects.filter(name=name).filter(
                Q(last_fire_at__isnull=True) | Q(last_fire_at__lt=fire_time)
            ).update(last_fire_at=fire_time)
        if reason == "buffered":
            updates["buffered_fire_at"] = None
        if updates:
            ScheduleRecord.objects.filter(name=name).update(**updates)
        log.info("schedule.fired", target=spec.target, reason=reason, fire_delay_ms=round(delay_ms, 3), **started)
        return started
    finally:
        structlog.contextvars.clear_contextvars()
