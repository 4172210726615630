"""A stage message the broker hands out again while its first delivery is still being worked on.

Why: when a worker's connection to RabbitMQ breaks (its node died, a network blip) but the worker
lives on, the broker returns every message it had not acknowledged, and another thread or process
gets it with the same message id. The claim rules let the same message take back a stage it
holds (that is how a stage whose worker died runs again at once), so without this check the stage
would run twice at the same time. Only redelivered messages are checked (one indexed read; the
usual path pays nothing): if the stage is held by this message in a worker that is alive (a
thread of this process, or a process whose heartbeat is fresh), the message comes back a little
later (`stage.deferred`); by then the first delivery has recorded the outcome and the copy is
dropped as a duplicate, or the holder has gone silent and the copy takes the stage over.

And a message that finds its stage not claimable (`not_claimed`): a duplicate, a stage of a run
that stopped, or the redelivery of a chain its worker was running inline when it died."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from dramatiq.errors import Retry

from . import _states as states
from ._liveness import live_workers
from .logging import get_logger
from .models import Run, StageRun, StageStatus
from ._sql import now as utcnow
from ._statuses import ACTIVE_RUN_STATUSES, WAITING_STAGE_STATUSES

if TYPE_CHECKING:
    from ._definitions import Stage
    from ._run_info import RunInfo

log = get_logger("pipeline.runtime")  # the worker's lines, wherever they are decided

HOLDER = "held_by"  # message option: a copy deferred because a live worker held its stage
DEFER_MS = 3000
# message id -> thread, of the stage messages this process is executing now
executing: dict[str, int] = {}


def may_take_back(message: Any) -> bool:
    """Whether this delivery may claim a stage that is running under its own message id: only a
    copy the broker redelivered, a deferred copy (`HOLDER`), or one Dramatiq's Retries published
    again (a store outage); each of them is checked by `live_holder` first. A first delivery never
    may: when its node died before it was acknowledged, the broker may already have handed a copy
    to another worker, which claimed the stage and runs it; taking it back would run it twice."""
    return message is None or bool(getattr(message, "redelivered", False) or HOLDER in message.options
                                   or message.options.get("retries"))


class Inspection(NamedTuple):
    """What a delivery found before claiming: `holder`, the live worker (`host:pid`) running its
    stage in another delivery (then it defers); `take_back`, the worker whose running stage under
    this message id it may take back (one found dead, or this worker itself), None for none."""

    holder: str | None = None
    take_back: str | None = None


def live_holder(message: Any, run_id: str, worker_id: str) -> str | None:
    """The live worker (`host:pid`) running this message's stage in another delivery, if any."""
    return inspect(message, run_id, worker_id).holder


def inspect(message: Any, run_id: str, worker_id: str) -> Inspection:
    """Whether another delivery of this message holds its stage alive (`holder`), and from which
    worker this delivery may take the stage back (`take_back`).

    The take-back names the holder this check saw, and the claim takes back only from it (a
    compare-and-set in the claim's WHERE): a copy that found nothing running must not take the
    stage from a delivery in another process that claimed it just after the check (the same race
    as below, across processes: the copy would take it back and both would run it).

    Another thread of this very process executing the same message id holds it back whichever
    delivery this is, the first one too. Why: the broker's copy may reach this process first, pass
    this check (nothing claimed yet), and then take the stage back from the first delivery, which
    claimed it in between (`make test`, quorum leader killed: one stage ran twice in one process,
    attempts 1 and 2 seven milliseconds apart). Whichever delivery registered in `executing` first
    runs; the other comes back later and finds the outcome recorded."""
    if message is None:
        return Inspection()
    other = executing.get(message.message_id)
    if other is not None and other != threading.get_ident():
        return Inspection(holder=worker_id)  # another thread of this very process
    if not may_take_back(message):
        return Inspection()
    row = (StageRun.objects.filter(run_id=run_id, message_id=message.message_id, status=StageStatus.RUNNING)
           .values("worker", "lease_until").first())
    if row is None or not row["worker"]:
        return Inspection()
    seen = Inspection(take_back=row["worker"])
    if row["worker"] == worker_id:
        return seen  # an earlier delivery in this process, which no thread executes any more
    if row["lease_until"] is not None and row["lease_until"] < utcnow():
        return seen  # past its lease: taken over whatever the holder does
    host, _, pid = row["worker"].rpartition(":")
    if not pid.isdigit():
        return seen
    alive = live_workers(utcnow()).filter(host=host, pid=int(pid)).exists()
    return Inspection(holder=row["worker"]) if alive else seen


def not_claimed(stage: "Stage", info: "RunInfo", message_id: str) -> "Stage | None":
    """A duplicate or stale message, a stage of a run that stopped, or the redelivery of a chain
    cut short. Returns the stage to go on with, if this message still holds one."""
    row = StageRun.objects.filter(run_id=info.run_id, stage=stage.name).values("status", "lease_until").first()
    if row is None:
        log.warning("stage.orphan_message", reason="no such stage run (run deleted or never created)")
        return None
    run_status = Run.objects.filter(id=info.run_id).values_list("status", flat=True).first()
    if run_status not in ACTIVE_RUN_STATUSES:
        if row["status"] in (*WAITING_STAGE_STATUSES, StageStatus.RUNNING):
            # Cancelled, or failed in another branch: this stage must not start.
            states.move_stage(info.run_id, stage.name, StageStatus.CANCELLED,
                              log_fields={"reason": f"run {run_status}"}, finished_at=utcnow(), quiet_refusal=True)
        else:
            log.info("stage.duplicate_skipped", status=row["status"])
        return None
    if row["status"] == StageStatus.SUCCEEDED:
        held = StageRun.objects.filter(run_id=info.run_id, message_id=message_id,
                                       status=StageStatus.RUNNING).values_list("stage", flat=True).first()
        if held is not None and held in stage.pipeline.stages:
            log.info("stage.resumed", resumed_stage=held, reason="redelivered while running a chain inline")
            return stage.pipeline.stages[held]
    if row["status"] == StageStatus.RUNNING and row["lease_until"] is not None:
        # Held by another live message: come back when its lease ends, in case its worker died.
        delay_ms = max(1000, int((row["lease_until"] - utcnow()).total_seconds() * 1000) + 1000)
        log.info("stage.deferred", reason="held by another message", retry_in_ms=delay_ms)
        raise Retry(delay=delay_ms)
    log.info("stage.duplicate_skipped", status=row["status"])
    return None
