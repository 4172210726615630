"""Schedules declared in code: interval, cron (with a time zone) and one-off, each starting a
pipeline with a payload or sending a message to an actor. Checked as they are declared."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger


class ScheduleError(ValueError):
    """A schedule declaration is invalid; the message says what to fix."""


@dataclass(frozen=True)
class Schedule:
    name: str
    pipeline: str | None = None
    actor: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    interval_seconds: float | None = None
    cron: str | None = None
    run_at: datetime | None = None
    timezone: str = "UTC"
    misfire_grace_seconds: int = 60

    def trigger(self) -> BaseTrigger:
        tz = _zone(self.timezone)
        if self.cron is not None:
            try:
                return CronTrigger.from_crontab(self.cron, timezone=tz)
            except ValueError as exc:
                raise ScheduleError(f"schedule {self.name!r}: invalid cron expression {self.cron!r}: {exc}") from None
        if self.interval_seconds is not None:
            # Anchored to a fixed epoch, so every scheduler process computes the same fire times
            # (and so the same idempotency keys), whenever it started.
            return IntervalTrigger(seconds=self.interval_seconds, timezone=tz, start_date=_EPOCH)
        return DateTrigger(run_date=self.run_at, timezone=tz)

    @property
    def target(self) -> str:
        return f"pipeline:{self.pipeline}" if self.pipeline else f"actor:{self.actor}"


_EPOCH = datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')") from None


schedules: dict[str, Schedule] = {}


def _register(schedule: Schedule) -> Schedule:
    if not schedule.name or not schedule.name.replace("_", "").replace("-", "").isalnum():
        raise ScheduleError(f"schedule name {schedule.name!r} must be letters, digits, '_' or '-'")
    if schedule.name in schedules:
        raise ScheduleError(f"schedule {schedule.name!r} is declared twice")
    if bool(schedule.pipeline) == bool(schedule.actor):
        raise ScheduleError(f"schedule {schedule.name!r}: give exactly one of pipeline= or actor=")
    if schedule.interval_seconds is not None and schedule.interval_seconds <= 0:
        raise ScheduleError(f"schedule {schedule.name!r}: interval must be positive, got {schedule.interval_seconds}")
    if not isinstance(schedule.payload, dict):
        raise ScheduleError(f"schedule {schedule.name!r}: payload must be a dict")
    schedule.trigger()  # validates the cron expression and the time zone now, at import time
    schedules[schedule.name] = schedule
    return schedule


def every(
    name: str,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    pipeline: str | None = None,
    actor: str | None = None,
    payload: dict[str, Any] | None = None,
    timezone: str = "UTC",
    misfire_grace_seconds: int = 60,
) -> Schedule:
    """Fires every `seconds + minutes + hours`."""
    interval = timedelta(seconds=seconds, minutes=minutes, hours=hours).total_seconds()
    return _register(
        Schedule(name, pipeline, actor, dict(payload or {}), interval_seconds=interval, timezone=timezone,
                 misfire_grace_seconds=misfire_grace_seconds)
    )


def cron(
    name: str,
    expression: str,
    *,
    timezone: str = "UTC",
    pipeline: str | None = None,
    actor: str | None = None,
    payload: dict[str, Any] | None = None,
    misfire_grace_seconds: int = 60,
) -> Schedule:
    """Fires on a five-field cron expression, read in `timezone` (DST changes included)."""
    return _register(
        Schedule(name, pipeline, actor, dict(payload or {}), cron=expression, timezone=timezone,
                 misfire_grace_seconds=misfire_grace_seconds)
    )


def once(
    name: str,
    at: datetime,
    *,
    timezone: str = "UTC",
    pipeline: str | None = None,
    actor: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Schedule:
    """Fires once, at `at`."""
    return _register(Schedule(name, pipeline, actor, dict(payload or {}), run_at=at, timezone=timezone))


def validate_targets() -> None:
    """Checks, once every app is loaded, that each schedule names a pipeline or actor that exists."""
    import dramatiq

    from pipeline.definitions import registry

    broker = dramatiq.get_broker()
    for schedule in schedules.values():
        if schedule.pipeline and schedule.pipeline not in registry.pipelines:
            raise ScheduleError(
                f"schedule {schedule.name!r}: unknown pipeline {schedule.pipeline!r} "
                f"(known: {', '.join(sorted(registry.pipelines)) or 'none'})"
            )
        if schedule.actor and schedule.actor not in broker.actors:
            raise ScheduleError(f"schedule {schedule.name!r}: unknown actor {schedule.actor!r}")
