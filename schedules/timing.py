"""Fire times: computed from a schedule's trigger, identical in every scheduler process."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Iterator

from apscheduler.triggers.base import BaseTrigger


def fire_key(schedule_name: str, fire_time: datetime) -> str:
    """The idempotency key of one fire: however many schedulers fire it, one run starts."""
    return f"schedule:{schedule_name}@{fire_time.astimezone(timezone.utc).isoformat()}"


def fire_times(trigger: BaseTrigger, start: datetime, end: datetime, limit: int = 100_000) -> Iterator[datetime]:
    """Fire times t with start <= t <= end, in order, each instant once (at most `limit`).
    Cron triggers (schedules.cron) never repeat an instant; the check keeps any trigger honest."""
    if hasattr(trigger, "fire_times"):  # schedules.cron.CrontabTrigger: one pass over wall-clock times
        yield from itertools.islice(trigger.fire_times(start, end), limit)
        return
    previous = None
    now = start
    for _ in range(limit):
        next_time = trigger.get_next_fire_time(previous, now)
        if next_time is None or next_time > end:
            return
        if previous is not None and next_time <= previous:
            raise RuntimeError(f"{trigger} went back from {previous.isoformat()} to {next_time.isoformat()}")
        if next_time >= start:
            yield next_time
        previous = next_time
        now = next_time


def missed_fire_times(
    trigger: BaseTrigger, last_fire: datetime | None, since: datetime, now: datetime
) -> list[datetime]:
    """Fire times after the last fire (and not before `since`) that are already due."""
    lower = max(t for t in (last_fire, since) if t is not None)
    return [t for t in fire_times(trigger, lower, now) if last_fire is None or t > last_fire]
