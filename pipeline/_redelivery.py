"""A stage message the broker hands out again while its first delivery is still being worked on.

Why: when a worker's connection to RabbitMQ breaks (its node died, a network blip) but the worker
lives on, the broker returns every message it had not acknowledged, and another thread or process
gets it with the same message id. The claim rules let the same message take back a stage it
holds (that is how a stage whose worker died runs again at once), so without this check the stage
would run twice at the same time. Only redelivered messages are checked (one indexed read; the
usual path pays nothing): if the stage is held by this message in a worker that is alive (a
thread of this process, or a process whose heartbeat is fresh), the message comes back a little
later (`stage.deferred`); by then the first delivery has recorded the outcome and the copy is
dropped as a duplicate, or the holder has gone silent and the copy takes the stage over."""
from __future__ import annotations

import threading
from typing import Any

from ._liveness import live_workers
from .models import StageRun, StageStatus
from ._sql import now as utcnow

HOLDER = "held_by"  # message option: a copy deferred because a live worker held its stage
DEFER_MS = 3000
# message id -> thread, of the stage messages this process is executing now
executing: dict[str, int] = {}


def live_holder(message: Any, run_id: str, worker_id: str) -> str | None:
    """The live worker (`host:pid`) running this message's stage in another delivery, if any."""
    if message is None or not (getattr(message, "redelivered", False) or HOLDER in message.options):
        return None
    other = executing.get(message.message_id)
    if other is not None and other != threading.get_ident():
        return worker_id  # another thread of this very process
    row = (StageRun.objects.filter(run_id=run_id, message_id=message.message_id, status=StageStatus.RUNNING)
           .values("worker", "lease_until").first())
    if row is None or not row["worker"] or row["worker"] == worker_id:
        return None
    if row["lease_until"] is not None and row["lease_until"] < utcnow():
        return None  # past its lease: taken over whatever the holder does
    host, _, pid = row["worker"].rpartition(":")
    if not pid.isdigit():
        return None
    alive = live_workers(utcnow()).filter(host=host, pid=int(pid)).exists()
    return row["worker"] if alive else None
