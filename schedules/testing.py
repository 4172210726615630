"""A clock for testing schedules: which instants a schedule fires at, and what a fire at a given
instant does, without a scheduler process and without waiting for the time to come.

    from schedules.testing import ScheduleClock

    def test_the_nightly_report_runs_at_two(pipelines):
        clock = ScheduleClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
        assert clock.next_fire_times("nightly_report", 2) == [datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc),
                                                              datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)]
        fired = clock.advance(hours=3)            # each fire time passed is fired, as the leader would
        pipelines.run(fired[0]["run_id"]).assert_succeeded()

Fires go through the scheduler's own `fire` (pause, overlap and catch-up policies, the
idempotency key of each fire time), so two fires of the same instant start one run. What a fire
starts is a run like any other: run it with `pipeline.testing`'s `pipelines`."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .firing import fire
from .operations import sync_code_schedules
from .registry import Schedule
from .timing import fire_times


class ScheduleClock:
    """A time of its own (`now`), moved by `advance`; the schedules declared in code are put in
    the database (as a scheduler does when it starts) when the clock is made."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        sync_code_schedules()

    def _spec(self, name: str) -> Schedule:
        from .operations import get  # the app registry: pytest imports this before Django is set up

        return get(name).spec()

    def next_fire_times(self, name: str, count: int = 1, after: datetime | None = None) -> list[datetime]:
        """The next `count` fire times of `name` strictly after `after` (default: the clock's now)."""
        start = (after or self.now) + timedelta(microseconds=1)
        found: list[datetime] = []
        end = start + timedelta(days=366 * 5)
        for moment in fire_times(self._spec(name).trigger(), start, end, limit=count):
            found.append(moment)
        return found

    def fire(self, name: str, at: datetime | None = None, *, reason: str = "schedule") -> dict[str, Any] | None:
        """Fires `name` for the instant `at` (default: now), as the leader does when that instant
        comes: returns what it started (`{"event_id", "run_id"}`), or None when a policy (paused,
        overlap) said not to."""
        return fire(name, (at or self.now).astimezone(timezone.utc), reason=reason)

    def advance(self, **delta: float) -> list[dict[str, Any]]:
        """Moves the clock by `timedelta(**delta)` and fires, in order, every fire time of every
        schedule passed on the way (those a policy skipped are left out of what is returned)."""
        from .models import ScheduleRecord  # the app registry: pytest imports this before Django is set up

        start, self.now = self.now, self.now + timedelta(**delta)
        due: list[tuple[datetime, str]] = []
        for record in ScheduleRecord.objects.all():
            trigger = record.spec().trigger()
            due.extend((t, record.name) for t in fire_times(trigger, start + timedelta(microseconds=1), self.now))
        started = []
        for moment, name in sorted(due):
            result = self.fire(name, moment)
            if result is not None:
                started.append({"schedule": name, "fire_time": moment, **result})
        return started
