"""The statuses a run and a stage run can be in, and the groups of them the engine asks about.

Here, not in `models.py`, so that what reads them needs no app registry: the door exports them to
`web/` and `schedules/`, and `sql.py` writes the same groups into its precompiled statements.
Which status may follow which is `states.py`'s."""
from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Flow control (pipeline/flow/), final: the event was folded into a later event's run
    # (debounce) or into a batch's run; `error` names that run.
    DEBOUNCED = "debounced"
    BATCHED = "batched"
    # Concurrency and singletons (pipeline/flow/): waiting for a slot, no stage published yet;
    # skipped (final): a singleton's start while its key had a run in progress.
    WAITING = "waiting"
    SKIPPED = "skipped"


class StageStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Waiting for its turn under a rate limit (a message due at next_attempt_at will try again).
    THROTTLED = "throttled"
    # Over its own concurrency limit (pipeline.flow): no message until a slot is free.
    WAITING = "waiting"


# A run flow control let in: its stages may be published and claimed.
ADMITTED_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)
# A run still under way (admitted, or waiting for a flow-control slot): it may be cancelled, it
# counts as active on the overview, a schedule's next fire overlaps it.
ACTIVE_RUN_STATUSES = (*ADMITTED_RUN_STATUSES, RunStatus.WAITING)
# A run that ended: nothing more happens to it unless it is replayed.
FINAL_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED,
                      RunStatus.DEBOUNCED, RunStatus.BATCHED)
# A stage a message may claim: enqueued for its first attempt or its next one, or for its turn.
CLAIMABLE_STAGE_STATUSES = (StageStatus.PENDING, StageStatus.RETRYING, StageStatus.THROTTLED)
# A stage waiting to run: claimable, or over its own concurrency limit (no message until a slot is free).
WAITING_STAGE_STATUSES = (*CLAIMABLE_STAGE_STATUSES, StageStatus.WAITING)


def sql_list(statuses: tuple[str, ...]) -> str:
    """`statuses` as an SQL list literal, `('pending', 'running')`, for statements written once."""
    return "(" + ", ".join(f"'{str(status)}'" for status in statuses) + ")"
