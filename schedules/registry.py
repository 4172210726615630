"""Schedules declared in code: interval, cron (with a time zone) and one-off, each starting a
pipeline with a payload or sending a message to an actor. Checked as they are declared; the
same checks guard schedules created at run time through the API or the admin."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dramatiq
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pipeline import EventError, registry, validate_start_payload

from .cron import CronError, CronExpression, CrontabTrigger

CATCH_UP_POLICIES = ("coalesce", "all", "none")
OVERLAP_POLICIES = ("allow", "skip", "buffer_one")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Interval fire times are counted from a fixed epoch, so every scheduler process computes the
# same fire times (and so the same idempotency keys), whenever it started.
_UTC = ZoneInfo("UTC")
EPOCH = datetime(2000, 1, 1, tzinfo=_UTC)


class ScheduleError(ValueError):
    """A schedule declaration is invalid; the message says what to fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
    catch_up: str = "coalesce"
    catch_up_window_seconds: int = 3600
    overlap: str = "allow"
    jitter_seconds: float = 0

    def trigger(self) -> BaseTrigger:
        tz = _zone(self.timezone)
        if self.cron is not None:
            try:
                return CrontabTrigger(CronExpression.parse(self.cron), tz)
            except CronError as exc:
                raise ScheduleError(
                    f"schedule {self.name!r}: invalid cron expression {self.cron!r}: {exc}", "cron"
                ) from None
        if self.interval_seconds is not None:
            return IntervalTrigger(seconds=self.interval_seconds, timezone=tz, start_date=EPOCH)
        return DateTrigger(run_date=self.run_at, timezone=tz)

    @property
    def target(self) -> str:
        return f"pipeline:{self.pipeline}" if self.pipeline else f"actor:{self.actor}"

    @property
    def kind(self) -> str:
        return "cron" if self.cron is not None else "interval" if self.interval_seconds is not None else "once"

    def definition(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> "Schedule":
        """Raises ScheduleError naming the first thing wrong with this declaration."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ScheduleError(f"schedule name {self.name!r} must be 1-100 letters, digits, '_', '-' or '.'", "name")
        if bool(self.pipeline) == bool(self.actor):
            raise ScheduleError(f"schedule {self.name!r}: give exactly one of pipeline or actor", "pipeline")
        kinds = [k for k in (self.cron, self.interval_seconds, self.run_at) if k is not None]
        if len(kinds) != 1:
            raise ScheduleError(
                f"schedule {self.name!r}: give exactly one of cron, interval_seconds or run_at", "cron"
            )
        if self.interval_seconds is not None and not self.interval_seconds > 0:
            raise ScheduleError(
                f"schedule {self.name!r}: interval_seconds must be positive, got {self.interval_seconds}",
                "interval_seconds",
            )
        if not isinstance(self.payload, dict):
            raise ScheduleError(f"schedule {self.name!r}: payload must be a JSON object", "payload")
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ScheduleError(
                f"schedule {self.name!r}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}", "catch_up"
            )
        if self.overlap not in OVERLAP_POLICIES:
            raise ScheduleError(
                f"schedule {self.name!r}: overlap must be one of {', '.join(OVERLAP_POLICIES)}", "overlap"
            )
        if self.overlap != "allow" and self.actor:
            raise ScheduleError(f"schedule {self.name!r}: overlap policies apply to pipelines, not actors", "overlap")
        for name in ("misfire_grace_seconds", "catch_up_window_seconds", "jitter_seconds"):
            if getattr(self, name) < 0:
                raise ScheduleError(f"schedule {self.name!r}: {name} cannot be negative", name)
        self.trigger()  # the cron expression and the time zone
        return self


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')", "timezone") from None


schedules: dict[str, Schedule] = {}


def _register(schedule: Schedule) -> Schedule:
    schedule.check()
    if schedule.name in schedules:
        raise ScheduleError(f"schedule {schedule.name!r} is declared twice", "name")
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
    **policies: Any,
) -> Schedule:
    """Fires every `seconds + minutes + hours`. Policies: misfire_grace_seconds, catch_up
    ("coalesce", "all", "none"), catch_up_window_seconds, overlap ("allow", "skip", "buffer_one"),
    jitter_seconds."""
    interval = timedelta(seconds=seconds, minutes=minutes, hours=hours).total_seconds()
    return _register(Schedule(name, pipeline, actor, dict(payload or {}), interval_seconds=interval,
                              timezone=timezone, **policies))


def cron(name: str, expression: str, *, timezone: str = "UTC", pipeline: str | None = None, actor: str | None = None,
         payload: dict[str, Any] | None = None, **policies: Any) -> Schedule:
    """Fires on a crontab(5) expression (five fields, or a nickname such as `@daily`) read as
    wall-clock time in `timezone`; schedules.cron says what happens when the clocks change."""
    return _register(Schedule(name, pipeline, actor, dict(payload or {}), cron=expression, timezone=timezone,
                              **policies))


def once(name: str, at: datetime, *, timezone: str = "UTC", pipeline: str | None = None, actor: str | None = None,
         payload: dict[str, Any] | None = None, **policies: Any) -> Schedule:
    """Fires once, at `at`."""
    return _register(Schedule(name, pipeline, actor, dict(payload or {}), run_at=at, timezone=timezone, **policies))


def check_target(schedule: Schedule) -> None:
    """Checks, once every app is loaded, that the schedule names a pipeline or actor that exists
    and that its payload fits the pipeline's event schema."""
    if schedule.pipeline:
        if schedule.pipeline not in registry.pipelines:
            raise ScheduleError(
                f"schedule {schedule.name!r}: unknown pipeline {schedule.pipeline!r} "
                f"(known: {', '.join(sorted(registry.pipelines)) or 'none'})", "pipeline",
            )
        try:
            validate_start_payload(schedule.pipeline, schedule.payload)
        except EventError as exc:
            raise ScheduleError(f"schedule {schedule.name!r}: {exc}", "payload") from None
    elif schedule.actor not in dramatiq.get_broker().actors:
        raise ScheduleError(f"schedule {schedule.name!r}: unknown actor {schedule.actor!r}", "actor")
    else:
        _refuse_engine_actor(schedule, dramatiq.get_broker().actors[schedule.actor])


def _refuse_engine_actor(schedule: Schedule, actor: Any) -> None:
    """A stage's actor takes a run id and trusts it: sent by a schedule with arbitrary arguments, it
    would run a stage outside its run's rules. Such actors (and any other of the engine's) are not
    schedule targets; the pipeline is."""
    for pipeline in registry.pipelines.values():
        for stage in pipeline.stages.values():
            if stage.actor_name == schedule.actor:
                raise ScheduleError(
                    f"schedule {schedule.name!r}: actor {schedule.actor!r} is stage {stage.name!r} of pipeline "
                    f"{pipeline.name!r}, run only by the engine; schedule the pipeline instead", "actor")
    module = getattr(getattr(actor, "fn", None), "__module__", "") or ""
    if module.split(".")[0] in ("pipeline", "schedules"):
        raise ScheduleError(f"schedule {schedule.name!r}: actor {schedule.actor!r} is internal to the engine", "actor")


def validate_targets() -> None:
    for schedule in schedules.values():
        check_target(schedule)
