"""The scheduler process: APScheduler decides when; a fire only emits (never does the work).

Each fire carries its scheduled fire time, which makes its idempotency key
(`schedule:<name>@<fire time>`): however many schedulers fire the same time, one run starts."""
from __future__ import annotations

import traceback
from datetime import datetime, timezone
from typing import Any

import dramatiq
import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from django.db import close_old_connections

from pipeline import conf, start, tracing
from pipeline.logging import get_logger
from pipeline.publisher import relay_once

from .registry import Schedule, schedules

log = get_logger("schedules.runner")


class FireTimeExecutor(BaseExecutor):
    """Runs a job inline, once per due fire time, passing that time to it. Fires are quick
    (a database write and a publish), and APScheduler's own executors hide the fire time."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        events = []
        for run_time in run_times:
            try:
                job.func(*job.args, fire_time=run_time, **job.kwargs)
            except Exception as exc:
                events.append(
                    JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc,
                                      traceback=traceback.format_exc())
                )
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time))
        self._run_job_success(job.id, events)


def fire_key(schedule_name: str, fire_time: datetime) -> str:
    return f"schedule:{schedule_name}@{fire_time.astimezone(timezone.utc).isoformat()}"


def fire(schedule_name: str, *, fire_time: datetime | None = None) -> str | None:
    """Starts the schedule's pipeline (or sends to its actor) for one fire time."""
    schedule = schedules[schedule_name]
    fire_time = fire_time or datetime.now(timezone.utc)
    key = fire_key(schedule_name, fire_time)
    trace_id = tracing.new_trace_id()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(trace_id=trace_id, schedule_id=schedule_name)
    close_old_connections()
    try:
        delay_ms = (datetime.now(timezone.utc) - fire_time).total_seconds() * 1000
        if schedule.pipeline:
            event_id = start(schedule.pipeline, schedule.payload, trigger=key, idempotency_key=key, trace_id=trace_id)
            log.info("schedule.fired", fire_time=fire_time.isoformat(), target=schedule.target, event_id=event_id,
                     fire_delay_ms=round(delay_ms, 3))
            return event_id
        actor = dramatiq.get_broker().get_actor(schedule.actor)
        message = actor.send_with_options(kwargs=schedule.payload, trace_id=trace_id, trigger=key)
        log.info("schedule.fired", fire_time=fire_time.isoformat(), target=schedule.target,
                 message_id=message.message_id, fire_delay_ms=round(delay_ms, 3))
        return None
    finally:
        structlog.contextvars.clear_contextvars()


def relay() -> None:
    close_old_connections()
    try:
        relay_once()
    except Exception as exc:  # keep the scheduler alive; the next pass tries again
        log.warning("relay.failed", error=f"{type(exc).__name__}: {exc}")


def build_scheduler(only: list[str] | None = None) -> BlockingScheduler:
    scheduler = BlockingScheduler(
        timezone=timezone.utc,
        executors={"default": FireTimeExecutor()},
        job_defaults={"coalesce": False, "max_instances": 1},
    )
    for schedule in schedules.values():
        if only and schedule.name not in only:
            continue
        _add(scheduler, schedule)
    scheduler.add_job(
        relay, "interval", seconds=conf.get("PIPELINE_RELAY_INTERVAL_SECONDS"), id="__relay__",
        misfire_grace_time=None, coalesce=True,
    )
    return scheduler


def _add(scheduler: BlockingScheduler, schedule: Schedule) -> None:
    scheduler.add_job(
        fire,
        schedule.trigger(),
        id=schedule.name,
        name=schedule.name,
        kwargs={"schedule_name": schedule.name},
        misfire_grace_time=schedule.misfire_grace_seconds,
    )
    log.info("schedule.loaded", schedule_id=schedule.name, target=schedule.target,
             trigger=str(schedule.trigger()))
