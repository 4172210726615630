"""Rate limits and throttles in the run store: the generic cell rate algorithm (GCRA), one row
per rule and key (`FlowRate`), changed under a row lock, so every worker process and host
shares one limit and no Redis is needed.

`limit` starts per `per` seconds are one start every T = per/limit (whole microseconds, rounded
up); `burst` lets that many more start at once after a quiet spell. A start is admitted when
`now >= tat - burst*T`, and then `tat = max(tat, now) + T`. Hence, with `now` read only once the
row is locked (so admissions are ordered like their times): any N+burst+1 consecutive starts
span at least `per` seconds, i.e. no window of `per` seconds holds more than `limit + burst`.

The admitted time is the stage's recorded `started_at` (`pipeline.flow._gate`). A refused start
is told when to come back: the next free turn after those already handed to other waiters
(`hint`), so a crowd of waiting stages comes back spread out, one per turn, not all at once.
Turns are hints, not reservations: a start is admitted only by the check above."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from ..models import FlowRate
from .._sql import now as utcnow
from ._rules import RateLimit


@dataclass(frozen=True)
class Decision:
    admitted: bool
    now: datetime
    retry_at: datetime | None = None  # throttle: when to try again


def interval(rule: RateLimit) -> timedelta:
    """T = per/limit, rounded up to the microsecond (the store's resolution): never faster."""
    return timedelta(microseconds=math.ceil(rule.per * 1_000_000 / rule.limit))


def acquire(name: str, key: str, rule: RateLimit) -> Decision:
    """One admission decision for rule `name` and `key`, in its own transaction. A stage refused
    again at its turn (the admission before it came late) takes a new turn at the end of the line:
    sending every such stage back at the next free moment made them a crowd that grew each time."""
    with transaction.atomic():
        FlowRate.objects.bulk_create([FlowRate(rule=name, key=key)], ignore_conflicts=True)
        row = FlowRate.objects.select_for_update().get(rule=name, key=key)
        now = utcnow()  # after the lock: admissions are ordered like their times
        step = interval(rule)
        tat = row.tat or now
        earliest = tat - step * rule.burst
        if now >= earliest:
            FlowRate.objects.filter(pk=row.pk).update(tat=max(tat, now) + step)
            return Decision(True, now)
        if rule.mode != "throttle":
            return Decision(False, now)
        turn = earliest if row.hint is None or row.hint < earliest else row.hint + step
        FlowRate.objects.filter(pk=row.pk).update(hint=turn)
        return Decision(False, now, turn)
