"""The ranges a schedule's values must lie in, and the check that a schedule can fire at all.

Without them a schedule could be saved that fails later, in the scheduler or the database: an
interval of 1e20 seconds overflows the trigger's timedelta, a misfire grace of 2**70 overflows
an integer column (PostgreSQL's `integer` holds 2**31 - 1), a catch-up window of 1.5e12
seconds or a jitter of 1e300 seconds mean nothing, and `0 0 31 2 *` never comes. The API's
schema (`web.api.schemas`) states the same numbers as its minimum/maximum; the API, the admin
and the CLI all refuse a value out of range with a ScheduleError naming the field."""
from __future__ import annotations

import math
from datetime import datetime, timezone

from .registry import Schedule, ScheduleError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MIN_INTERVAL_SECONDS = 1  # the leader wakes every second: a shorter interval cannot be kept
MAX_INTERVAL_SECONDS = 366 * 24 * 3600  # a year (leap); rarer fires are a cron or a one-off
MAX_MISFIRE_GRACE_SECONDS = 7 * 24 * 3600
MAX_CATCH_UP_WINDOW_SECONDS = 30 * 24 * 3600
MAX_JITTER_SECONDS = 24 * 3600
MAX_BACKFILL = 10_000
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_RUN_AT = datetime(9998, 12, 31, tzinfo=timezone.utc)

_NUMBERS = (
    ("interval_seconds", MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS),
    ("misfire_grace_seconds", 0, MAX_MISFIRE_GRACE_SECONDS),
    ("catch_up_window_seconds", 0, MAX_CATCH_UP_WINDOW_SECONDS),
    ("jitter_seconds", 0, MAX_JITTER_SECONDS),
)


def check_bounds(spec: Schedule, now: datetime | None = None) -> Schedule:
    """Checks `spec` whole: raises ScheduleError naming the field when a value is out of range,
    when `spec.check()` refuses it (checked after the ranges: an out-of-range interval would
    overflow while its trigger is built), or when it has no next fire time (asked of the
    schedule's own trigger)."""
    for name, low, high in _NUMBERS:
        value = getattr(spec, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScheduleError(f"schedule {spec.name!r}: {name} must be a finite number", name)
        if not low <= value <= high:
            raise ScheduleError(f"schedule {spec.name!r}: {name} must be from {low} to {high}, got {value}", name)
    if spec.run_at is not None:
        moment = spec.run_at if spec.run_at.tzinfo else spec.run_at.replace(tzinfo=timezone.utc)
        try:
            in_range = EARLIEST_RUN_AT <= moment.astimezone(timezone.utc) <= LATEST_RUN_AT
        except (OverflowError, ValueError):
            in_range = False
        if not in_range:
            raise ScheduleError(f"schedule {spec.name!r}: run_at must lie between 1970 and 9998", "run_at")
    spec.check()
    if spec.cron is not None:
        try:
            next_fire = spec.trigger().get_next_fire_time(None, now or datetime.now(timezone.utc))
        except (OverflowError, ValueError):
            next_fire = None
        if next_fire is None:
            raise ScheduleError(f"schedule {spec.name!r}: cron expression {spec.cron!r} never fires", "cron")
    return spec
