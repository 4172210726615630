"""The run and stage state machines: the only module that changes a status.

Each transition is one conditional UPDATE (`WHERE status IN <allowed sources>`), so two
processes racing for the same change cannot both win, and one structured log line. An
impossible transition is refused and logged, never applied."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from . import _fastsql as fastsql, _writer as writer
from .logging import get_logger, info_on_commit
from .models import Run, StageRun
from ._statuses import RunStatus, StageStatus

log = get_logger("pipeline.states")

RUN_TRANSITIONS: dict[str, set[str]] = {
    # debounced/batched: folded into another run by flow control (pipeline/flow/_windows.py);
    # pending -> waiting: a replay's new run that flow control holds back (pipeline/flow/_slots.py).
    RunStatus.PENDING: {RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.DEBOUNCED,
                        RunStatus.BATCHED, RunStatus.WAITING},
    RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED},
    RunStatus.FAILED: {RunStatus.RUNNING, RunStatus.WAITING},  # a replay resumes a failed run (or waits for a slot)
    RunStatus.CANCELLED: {RunStatus.RUNNING, RunStatus.WAITING},  # ...or a cancelled one
    RunStatus.SUCCEEDED: set(),
    RunStatus.DEBOUNCED: set(),
    RunStatus.BATCHED: set(),
    # Flow control (pipeline.flow): a run waiting for a slot is admitted (pending, or running again
    # when a replay waited) or cancelled; a skipped run was never started.
    RunStatus.WAITING: {RunStatus.PENDING, RunStatus.RUNNING, RunStatus.CANCELLED},
    RunStatus.SKIPPED: set(),
}

STAGE_TRANSITIONS: dict[str, set[str]] = {
    StageStatus.PENDING: {StageStatus.RUNNING, StageStatus.CANCELLED, StageStatus.THROTTLED, StageStatus.WAITING},
    StageStatus.RUNNING: {StageStatus.SUCCEEDED, StageStatus.RETRYING, StageStatus.FAILED, StageStatus.CANCELLED},
    StageStatus.RETRYING: {StageStatus.RUNNING, StageStatus.CANCELLED, StageStatus.THROTTLED, StageStatus.WAITING},
    # waits for its turn under a rate limit (pipeline/flow/_rate.py); the message-path claim
    # (pipeline/_sql.py) takes it like a pending stage, unless it is over its own concurrency limit
    StageStatus.THROTTLED: {StageStatus.RUNNING, StageStatus.CANCELLED, StageStatus.THROTTLED,  # a later turn
                            StageStatus.WAITING},
    # Over its own concurrency limit when claimed (pipeline.flow): admitted again, or cancelled with its run.
    StageStatus.WAITING: {StageStatus.PENDING, StageStatus.CANCELLED},
    StageStatus.FAILED: {StageStatus.PENDING},  # replay
    StageStatus.CANCELLED: {StageStatus.PENDING},  # replay
    StageStatus.SUCCEEDED: set(),
}


def sources_of(target: str, table: dict[str, set[str]] = RUN_TRANSITIONS) -> list[str]:
    """The statuses `target` may be reached from: for statements written elsewhere in SQL
    (the message path's, flow control's), so their WHERE clauses follow this table."""
    return _sources(table, target)


def _sources(table: dict[str, set[str]], target: str) -> list[str]:
    return [source for source, targets in table.items() if target in targets]


def move_run(
    run_id: Any,
    target: str,
    *,
    sources: list[str] | None = None,
    log_name: str | None = None,
    log_fields: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Moves a run to `target` if its current status allows it (and is one of `sources`, when
    given); logs `run.<target>` (`run.started` for running, or `log_name`) or the refusal.
    What a run's end sets off (its outcome event) is the caller's to do, in the same transaction."""
    allowed = _sources(RUN_TRANSITIONS, target)
    if sources is not None:
        allowed = [s for s in allowed if s in sources]
    updated = fastsql.update(Run, {"id": _uuid(run_id), "status": allowed}, {"status": target, **fields})
    if updated:
        name = log_name or ("run.started" if target == RunStatus.RUNNING else f"run.{target}")
        info_on_commit(log, name, run_id=str(run_id), **(log_fields or {}))
    else:
        current = Run.objects.filter(id=run_id).values_list("status", flat=True).first()
        log.warning("run.transition_refused", run_id=str(run_id), from_status=current, to_status=target)
    return bool(updated)


def move_stage(
    run_id: Any,
    stage: str,
    target: str,
    *,
    holder: str | None = None,
    attempt: int | None = None,
    log_fields: dict[str, Any] | None = None,
    quiet_refusal: bool = False,
    **fields: Any,
) -> bool:
    """Moves a stage run to `target`; with `holder` and `attempt`, only while that message's
    claim of that attempt still holds it (a redelivered copy of the message that re-claimed
    the stage has a later attempt number, and only it may record the outcome)."""
    where = {"run_id": _uuid(run_id), "stage": stage, "status": _sources(STAGE_TRANSITIONS, target)}
    if holder is not None:
        where["message_id"] = holder
    if attempt is not None:
        where["attempts"] = attempt
    updated = fastsql.update(StageRun, where, {"status": target, **fields})
    if updated:
        if log_fields is not None:
            info_on_commit(log, f"stage.{target}", run_id=str(run_id), stage=stage, **log_fields)
    elif not quiet_refusal:
        current = StageRun.objects.filter(run_id=run_id, stage=stage).values_list("status", flat=True).first()
        log.warning(
            "stage.transition_refused", run_id=str(run_id), stage=stage, from_status=current, to_status=target
        )
    return bool(updated)


def claim_stage(
    run_id: Any, stage: str, message_id: str, now: datetime, lease_until: datetime, worker: str,
    take_back_from: str | None = None,
) -> int | None:
    """Takes a stage to run it and returns its attempt number, or None if it cannot be taken.
    Exactly one message wins: a waiting stage (a fan-in once all its parents succeeded), a stage
    whose holder's lease ran out, or a redelivery of the very message that held it in a worker
    that died (`take_back_from`, by default this same worker); never a stage of a run that is no
    longer pending or running.

    One `UPDATE ... RETURNING` (SQLite >= 3.35, PostgreSQL); the message path runs the same
    statement through the group-commit writer (`pipeline._stage_store.claim`)."""
    def op(tx: Any) -> int | None:
        d = tx.d
        key = d.uuid(run_id)
        rows = tx.execute(tx.q.claim, (message_id, d.dt(lease_until), d.dt(now), worker, key, stage, message_id,
                                       take_back_from or worker, d.dt(now), key)).fetchall()
        return rows[0][0] if rows else None

    return writer.run_direct(op)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
