"""The cron engine is crontab(5) in wall-clock time. Checked against an oracle written here, from the
man page, with nothing of schedules.cron in it: it walks UTC minute by minute, reads each minute's
wall clock from the zone's UTC offsets, keeps the minutes whose wall-clock fields match, and applies
the two documented rules for clock changes (a skipped wall time fires at the first instant after the
gap; a repeated one fires once, at its first occurrence)."""
from __future__ import annotations

import bisect
import re
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest

from schedules.cron import CronExpression
from schedules.registry import Schedule
from schedules.timing import fire_times

# Pure logic (no run store): run once, in the SQLite pass of `make test`.
pytestmark = pytest.mark.store_independent

UTC = timezone.utc
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe")

EXPRESSIONS = (
    "* * * * *", "*/15 * * * *", "0 * * * *", "30 * * * *", "0 */2 * * *", "23 0-23/2 * * *",
    "0 0 * * *", "30 1 * * *", "59 1 * * *", "30 2 * * *", "15 2 * * *", "0 2 * * *", "45 2 * * *",
    "0 3 * * *", "*/30 2 * * *", "0,30 1-3 * * *", "0 1,2,3 * * *", "*/5 1-3 * * *", "10-20/5 2 * * *",
    "45 23 * * *", "0 0 1 * *", "0 0 1 1 *", "0 12 15 * *", "0 0 1,15 * *", "0 2 31 * *", "0 0 29 2 *",
    "0 0 */2 * *", "0 0 * * 0", "0 0 * * 7", "0 0 * * 0-7", "0 9 * * 1-5", "5 4 * * sun", "0 1 * * 6,0",
    "0 0 * * */2", "30 2 * * 0", "0 0 1 * 1", "0 0 13 * 5", "0 0 1-7 * 1", "0 2-3 * mar,apr,oct,nov sun",
    "0 0 * 3,10 0", "0 0 * jan-jun *", "0 22 * * 1-5", "0 0 */10 * 1",
    "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
)

# ---- the oracle ---------------------------------------------------------------------------------

_NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
              "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_NAMES = {3: "jan feb mar apr may jun jul aug sep oct nov dec".split(), 4: "sun mon tue wed thu fri sat".split()}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _oracle_fields(expression: str) -> tuple[list[set[int]], bool]:
    """crontab(5) fields as sets, and whether a day matches on either day field (both restricted)."""
    text = _NICKNAMES.get(expression, expression)
    fields = []
    for index, item in enumerate(text.split()):
        low, high = _BOUNDS[index]
        allowed: set[int] = set()
        for part in item.lower().split(","):
            first, last, step = re.fullmatch(r"(\*|\w+)(?:-(\w+))?(?:/(\d+))?", part).groups()

            def number(token: str) -> int:
                return _NAMES[index].index(token) + (index == 3) if token.isalpha() else int(token)

            if first == "*":
                lo, hi = low, high
            else:
                lo = number(first)
                hi = number(last) if last else high if step else lo
            allowed |= set(range(lo, hi + 1, int(step or 1)))
        fields.append(allowed)
    if 7 in fields[4]:
        fields[4].add(0)
    return fields, not text.split()[2].startswith("*") and not text.split()[4].startswith("*")


class _Offsets:
    """A zone's UTC offset (in minutes) for every UTC minute from mid-2025 to mid-2030, from zoneinfo's
    utcoffset() alone, as a sorted list of (first minute, offset) pieces."""

    def __init__(self, zone: str) -> None:
        tz = ZoneInfo(zone)

        def offset(minute: int) -> int:
            return int(datetime.fromtimestamp(minute * 60, tz).utcoffset().total_seconds()) // 60

        start = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp()) // 60
        end = int(datetime(2030, 6, 1, tzinfo=UTC).timestamp()) // 60
        self.starts, self.values = [start], [offset(start)]
        for hour in range(start, end, 60):
            if offset(hour + 60) != offset(hour):
                low, high = hour, hour + 60  # the change happens in (low, high]
                while high - low > 1:
                    middle = (low + high) // 2
                    low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
                self.starts.append(high)
                self.values.append(offset(high))

    def at(self, minute: int) -> tuple[int, int]:
        """(offset at `minute`, index of its piece)."""
        index = bisect.bisect_right(self.starts, minute) - 1
        return self.values[index], index


@lru_cache(maxsize=None)
def _offsets(zone: str) -> _Offsets:
    return _Offsets(zone)


def oracle(expression: str, zone: str, start: datetime, until: datetime, at_least: int) -> list[datetime]:
    """Fire instants from `start` on, up to `until` and then until there are `at_least`: brute force
    over UTC minutes (skipping whole local days and hours whose fields cannot match)."""
    (minutes, hours, days, months, weekdays), either = _oracle_fields(expression)
    offsets = _offsets(zone)

    def day_matches(day_number: int) -> bool:
        day = date.fromordinal(_EPOCH_ORDINAL + day_number)
        if day.month not in months:
            return False
        dom, dow = day.day in days, day.isoweekday() % 7 in weekdays
        return (dom or dow) if either else (dom and dow)

    def wall_matches(wall: int) -> bool:
        return day_matches(wall // 1440) and (wall % 1440) // 60 in hours and wall % 60 in minutes

    fires: list[int] = []
    minute, stop = int(start.timestamp()) // 60, int(until.timestamp()) // 60
    horizon = minute + 3 * 366 * 1440
    while minute <= horizon and (minute <= stop or len(fires) < at_least):
        offset, piece = offsets.at(minute)
        wall = minute + offset
        next_change = offsets.starts[piece + 1] if piece + 1 < len(offsets.starts) else horizon + 1
        fired = False
        if minute == offsets.starts[piece] and piece > 0:
            previous = offsets.values[piece - 1]
            if offset > previous:  # clocks went forward: walls [minute + previous, wall) never existed
                fired = any(wall_matches(w) for w in range(minute + previous, wall))
        # clocks went back: walls before `change + previous offset` were already seen once
        repeated = (piece > 0 and offsets.values[piece - 1] > offset
                    and wall < offsets.starts[piece] + offsets.values[piece - 1])
        if (wall_matches(wall) and not repeated) or fired:
            fires.append(minute)
        if not day_matches(wall // 1440):
            step = 1440 - wall % 1440
        elif (wall % 1440) // 60 not in hours:
            step = 60 - wall % 60
        else:
            step = 1
        minute = min(minute + step, next_change)  # never jump over a clock change
    return [datetime.fromtimestamp(m * 60, UTC) for m in fires]


def engine(expression: str, zone: str, start: datetime, until: datetime, at_least: int) -> list[datetime]:
    trigger = Schedule("t", pipeline="ticks", cron=expression, timezone=zone).trigger()
    found: list[datetime] = []
    for moment in fire_times(trigger, start, start + timedelta(days=3 * 366)):
        if moment > until and len(found) >= at_least:
            break
        found.append(moment.astimezone(UTC))
    return found


def _changes(zone: str) -> list[datetime]:
    offsets = _offsets(zone)
    changes = [datetime.fromtimestamp(m * 60, UTC) for m in offsets.starts[1:]]
    return [c for c in changes if c.year in (2026, 2027)]


def _windows() -> dict[str, list[tuple[datetime, datetime]]]:
    """For each zone: (start, until) around every clock change of 2026-2027 (UTC borrows Paris's):
    starts from two days before the change to a day after it, each compared until 3 hours past the
    change (or past the start, if later); every expression is also compared for at least 3 fires,
    which carries a daily, monthly or yearly one across the change."""
    around = (timedelta(days=-2, hours=-7, minutes=-13), timedelta(minutes=-61), timedelta(0),
              timedelta(minutes=1), timedelta(minutes=30), timedelta(hours=20))
    past = timedelta(hours=3)
    result = {}
    for zone in ZONES:
        changes = _changes("Europe/Paris" if zone == "UTC" else zone)
        result[zone] = [(change + delta, max(change, change + delta) + past) for change in changes for delta in around]
    return result


def test_the_oracle_sees_every_clock_change_of_2026_and_2027():
    assert [len(_changes(zone)) for zone in ZONES] == [0, 4, 4, 4]
    assert datetime(2026, 10, 3, 15, 30, tzinfo=UTC) in _changes("Australia/Lord_Howe")  # 02:00 -> 02:30


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_fire_times_match_the_crontab_oracle_around_every_clock_change(expression):
    windows = _windows()
    mismatches = []
    for zone in ZONES:
        for start, until in windows[zone]:
            expected = oracle(expression, zone, start, until, at_least=3)
            got = engine(expression, zone, start, until, at_least=3)
            assert len(set(got)) == len(got), f"{expression} in {zone} from {start}: an instant fires twice"
            if got != expected:
                first = next(i for i, (a, b) in enumerate(zip(got + [None], expected + [None])) if a != b)
                mismatches.append(f"{zone} from {start:%Y-%m-%d %H:%M}Z: fire #{first} is "
                                  f"{got[first] if first < len(got) else None}, crontab says "
                                  f"{expected[first] if first < len(expected) else None}")
    assert not mismatches, f"{expression!r}: {len(mismatches)} mismatches, e.g. " + "; ".join(mismatches[:3])


def test_the_table_has_at_least_40_expressions_and_covers_the_issue_s():
    assert len(set(EXPRESSIONS)) >= 40
    for needed in ("0 0 1 * *", "0 0 * * *", "0 0 * * 0-7", "0 0 1 1 *", "0 0 1 * 1", "0 0 13 * 5",
                   "0 0 1-7 * 1", "15 2 * * *", "*/30 2 * * *", "@daily", "@hourly", "@weekly", "@monthly", "@yearly"):
        assert needed in EXPRESSIONS


# ---- the regressions of issue 16, by name ---------------------------------------------------------

def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(expression: str, zone: str, start: datetime, count: int) -> list[str]:
    trigger = Schedule("t", pipeline="ticks", cron=expression, timezone=zone).trigger()
    found = []
    for moment in fire_times(trigger, start, start + timedelta(days=3 * 366)):
        found.append(moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z"))
        if len(found) == count:
            break
    return found


@pytest.mark.parametrize("zone, april_first", [
    ("Europe/Paris", "2026-04-01 00:00 CEST"), ("America/New_York", "2026-04-01 00:00 EDT")])
def test_a_monthly_fire_after_the_spring_change_is_not_skipped(zone, april_first):
    assert fires("0 0 1 * *", zone, utc(2026, 3, 15), 2) == [april_first, april_first.replace("04-01", "05-01")]


def test_a_monthly_fire_in_lord_howe_on_november_first_is_not_skipped():
    assert fires("0 0 1 * *", "Australia/Lord_Howe", utc(2026, 9, 15), 3) == [
        "2026-10-01 00:00 +1030", "2026-11-01 00:00 +11", "2026-12-01 00:00 +11"]


def test_a_daily_midnight_in_paris_fires_on_march_30th():
    assert fires("0 0 * * *", "Europe/Paris", utc(2026, 3, 28, 12), 3) == [
        "2026-03-29 00:00 CET", "2026-03-30 00:00 CEST", "2026-03-31 00:00 CEST"]


def test_every_day_of_week_0_to_7_fires_on_monday_march_9th_in_new_york():
    assert fires("0 0 * * 0-7", "America/New_York", utc(2026, 3, 7, 12), 3) == [
        "2026-03-08 00:00 EST", "2026-03-09 00:00 EDT", "2026-03-10 00:00 EDT"]


def test_new_year_in_lord_howe_fires_in_the_coming_january():
    assert fires("0 0 1 1 *", "Australia/Lord_Howe", utc(2026, 6, 1), 2) == [
        "2027-01-01 00:00 +11", "2028-01-01 00:00 +11"]


def test_restricted_day_of_month_and_day_of_week_fire_when_either_matches():
    assert fires("0 0 1 * 1", "UTC", utc(2026, 1, 1), 4) == [
        "2026-01-01 00:00 UTC", "2026-01-05 00:00 UTC", "2026-01-12 00:00 UTC", "2026-01-19 00:00 UTC"]
    # A field that starts with "*" is not restricted: then both must match, as in crontab(5).
    assert fires("0 0 */2 * 1", "UTC", utc(2026, 1, 1), 2) == ["2026-01-05 00:00 UTC", "2026-01-19 00:00 UTC"]


def test_a_skipped_wall_time_fires_at_the_first_instant_after_the_gap():
    # Lord Howe moves from 02:00 to 02:30 on 2026-10-04: 02:15 fires at 02:30 (15:30Z), 30 min on.
    assert fires("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 2, 12), 3) == [
        "2026-10-03 02:15 +1030", "2026-10-04 02:30 +11", "2026-10-05 02:15 +11"]
    # New York moves from 02:00 to 03:00 on 2026-03-08: 02:30 fires at 03:00 EDT.
    assert fires("30 2 * * *", "America/New_York", utc(2026, 3, 7), 3) == [
        "2026-03-07 02:30 EST", "2026-03-08 03:00 EDT", "2026-03-09 02:30 EDT"]


def test_wall_times_that_land_on_the_same_instant_fire_once():
    trigger = Schedule("t", pipeline="ticks", cron="*/30 2 * * *", timezone="Australia/Lord_Howe").trigger()
    times = list(fire_times(trigger, utc(2026, 10, 3, 12), utc(2026, 10, 4, 12)))
    assert [t.astimezone(UTC).strftime("%H:%M") for t in times] == ["15:30"]  # 02:00 skipped, 02:30 real
    assert len(set(times)) == len(times)


def test_a_repeated_wall_time_fires_once_at_its_first_occurrence():
    assert fires("30 1 * * *", "America/New_York", utc(2026, 10, 31), 3) == [
        "2026-10-31 01:30 EDT", "2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"]
    # Asked from inside the repeated hour's second pass, the next fire is the next day's.
    assert fires("30 1 * * *", "America/New_York", utc(2026, 11, 1, 6, 10), 1) == ["2026-11-02 01:30 EST"]


@pytest.mark.parametrize("nickname, same_as", [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"), ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@hourly", "0 * * * *")])
def test_nicknames_are_their_crontab_expressions(nickname, same_as):
    a, b = CronExpression.parse(nickname), CronExpression.parse(same_as)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays, a.either_day) == (
        b.minutes, b.hours, b.days, b.months, b.weekdays, b.either_day)
