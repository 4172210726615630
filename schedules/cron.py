"""crontab(5) in wall-clock time: the one place that parses cron expressions and turns them into
fire instants. Everything that needs a cron fire time (the scheduler, catch-up, backfill, the API's
validation, the next fire shown on the dashboard) comes through here.

Why not APScheduler 3's `CronTrigger`: it adds wall-clock differences in UTC, so after a
spring-forward change it skips whole days or months (agronholm/apscheduler #529, #606), it ANDs a
restricted day of month with a restricted day of week, and it knows no `@daily`. Here the fire
times are found among wall-clock times first (date, hour, minute in the schedule's zone), and only
then mapped to instants, with two rules for the times a zone's clock changes:

- a wall time that does not exist (skipped when clocks go forward) fires at the first instant after
  the gap (New York's 02:30 on a spring-forward night fires at 03:00 EDT; Lord Howe's 02:15 fires at
  02:30, its clocks moving by 30 minutes);
- a wall time that exists twice (repeated when clocks go back) fires once, at its first occurrence.

Several wall times that land on the same instant fire once. The fire times are a pure function of
the expression and the zone, so every scheduler process, before or after a restart, computes the
same instants (and so the same idempotency keys)."""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Iterator

from apscheduler.triggers.base import BaseTrigger

__all__ = ["CronError", "CronExpression", "CrontabTrigger", "NICKNAMES"]

_UTC = timezone.utc

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = {n: i for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAY_NAMES = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names): day of week runs 0-7, both 0 and 7 being Sunday.
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DAY_NAMES),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February's 29th exists in leap years
# No expression that parses waits longer than 8 years between fires (February 29th): the search for
# the next fire stops there.
_SEARCH_DAYS = 366 * 9


class CronError(ValueError):
    """Raised when a cron expression is not crontab(5); the message names the field at fault."""


def _value(text: str, field: str, low: int, high: int, names: dict[str, int] | None) -> int:
    if text.isdigit():
        number = int(text)
    elif names is not None and text.lower() in names:
        number = names[text.lower()]
    else:
        known = f" or a name ({', '.join(names)})" if names else ""
        raise CronError(f"{field} {text!r} is not a number{known}")
    if not low <= number <= high:
        raise CronError(f"{field} {text!r} is out of range {low}-{high}")
    return number


def _field(text: str, field: str, low: int, high: int, names: dict[str, int] | None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field} field {text!r} has an empty list item")
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field} step {step_text!r} in {part!r} must be a whole number above 0")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = body.partition("-")
            first = _value(first_text, field, low, high, names)
            # "5/15" (a start and a step, no end) runs to the field's end, as in cronie.
            last = _value(last_text, field, low, high, names) if dash else high if slash else first
            if last < first:
                raise CronError(f"{field} range {body!r} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field crontab(5) expression (or `@` nickname): the sets of wall-clock values
    each field allows. Day of week is 0-6 from Sunday (7 is folded into 0)."""

    source: str
    minutes: tuple[int, ...]  # sorted
    hours: tuple[int, ...]  # sorted
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    # crontab(5): when both day fields are restricted (do not start with "*"), a day matches when
    # either does; otherwise both must match.
    either_day: bool

    @classmethod
    def parse(cls, expression: object) -> "CronExpression":
        if not isinstance(expression, str):
            raise CronError(f"a cron expression is a string, not {type(expression).__name__}")
        text = expression.strip()
        if text.startswith("@"):
            if text.lower() not in NICKNAMES:
                raise CronError(f"unknown nickname {text!r} (known: {', '.join(NICKNAMES)})")
            text = NICKNAMES[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"Wrong number of fields; got {len(parts)}, expected 5 "
                "(minute hour day-of-month month day-of-week) or an @ nickname"
            )
        minutes, hours, days, months, weekdays = (_field(p, *spec) for p, spec in zip(parts, _FIELDS))
        weekdays = frozenset(d % 7 for d in weekdays)
        minutes, hours = tuple(sorted(minutes)), tuple(sorted(hours))
        either_day = not parts[2].startswith("*") and not parts[4].startswith("*")
        if not either_day and not any(d <= _DAYS_IN_MONTH[m - 1] for m in months for d in days):
            raise CronError(f"{expression!r} never fires: no month it names has the days of month it names")
        return cls(expression, minutes, hours, days, months, weekdays, either_day)

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days, in_weekdays = day.day in self.days, day.isoweekday() % 7 in self.weekdays
        return (in_days or in_weekdays) if self.either_day else (in_days and in_weekdays)

    def wall_times(self, start: datetime, last_day: date) -> Iterator[datetime]:
        """Matching wall-clock times (naive, to the minute) from `start` (naive, whole minute) to the
        end of `last_day`, in order."""
        day, first = start.date(), True
        while day <= last_day:
            if self.matches_day(day):
                hours = self.hours[bisect_left(self.hours, start.hour):] if first else self.hours
                for hour in hours:
                    minutes = self.minutes
                    if first and hour == start.hour:
                        minutes = minutes[bisect_left(minutes, start.minute):]
                    for minute in minutes:
                        yield datetime(day.year, day.month, day.day, hour, minute)
            day, first = day + timedelta(days=1), False

    def next_fire(self, moment: datetime, zone: tzinfo) -> datetime | None:
        """The first fire instant at or after `moment` (aware), in `zone`; None if there is none."""
        return next(self.fire_times(moment, moment + timedelta(days=_SEARCH_DAYS), zone), None)

    def fire_times(self, start: datetime, end: datetime, zone: tzinfo) -> Iterator[datetime]:
        """Every fire instant t with start <= t <= end (aware), in order, each once, in `zone`."""
        start, end = start.astimezone(_UTC), end.astimezone(_UTC)
        # Wall times in a gap map to the instant the gap ends, which is `start` itself when it is
        # that instant: so begin at the wall time just before `start`, not at it. The mapping from
        # wall time to instant never goes back, so no earlier wall time can fire at `start` or later.
        before = (start - timedelta(microseconds=1)).astimezone(zone).replace(tzinfo=None, fold=0)
        last_day = end.astimezone(zone).date() + timedelta(days=1)
        previous: datetime | None = None
        for wall in self.wall_times(before.replace(second=0, microsecond=0), last_day):
            instant = wall_to_instant(wall, zone)
            if instant > end:
                return
            if instant < start or (previous is not None and instant <= previous):
                continue  # before the range, or a second wall time on an instant that already fired
            previous = instant
            yield instant.astimezone(zone)


def wall_to_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The instant (UTC) a naive wall-clock time fires at in `zone`: itself when it exists (its first
    occurrence when it exists twice), the end of the gap when the clocks skipped it."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """The first instant after the gap that swallowed `wall`: the zone's transition instant. The
    two readings of the wall time (with the offset before and after) bracket it; bisect to the
    second (transitions fall on whole seconds)."""
    readings = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(_UTC) for f in (0, 1))
    low, high = (int(r.timestamp()) for r in readings)
    offset_before = readings[0].astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, _UTC)


class CrontabTrigger(BaseTrigger):
    """An APScheduler trigger over a `CronExpression`: APScheduler's scheduler loop, our fire times.
    Each call returns a time strictly after the previous fire, so no instant fires twice."""

    def __init__(self, expression: CronExpression, zone: tzinfo) -> None:
        self.expression = expression
        self.timezone = zone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        start = previous_fire_time + timedelta(microseconds=1) if previous_fire_time is not None else now
        return self.expression.next_fire(start, self.timezone)

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """All fire times in [start, end] in one pass (backfill, catch-up)."""
        return self.expression.fire_times(start, end, self.timezone)

    def __str__(self) -> str:
        return f"cron[{self.expression.source!r}, {self.timezone}]"

    def __repr__(self) -> str:
        return f"<CrontabTrigger ({self.expression.source!r}, timezone={str(self.timezone)!r})>"
