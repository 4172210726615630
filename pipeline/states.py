"""The run and stage state machines: the only module that changes a status.

Each transition is one conditional UPDATE (`WHERE status IN <allowed sources>`), so two
processes racing for the same change cannot both win, and one structured log line. An
impossible transition is refused and logged, never applied."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import F, Q

from .logging import get_logger
from .models import Run, RunStatus, StageRun, StageStatus

log = get_logger("pipeline.states")

RUN_TRANSITIONS: dict[str, set[str]] = {
    RunStatus.PENDING: {RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED},
    RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED},
    RunStatus.FAILED: {RunStatus.RUNNING},  # a replay resumes a failed run
    RunStatus.CANCELLED: {RunStatus.RUNNING},  # ...or a cancelled one
    RunStatus.SUCCEEDED: set(),
}

STAGE_TRANSITIONS: dict[str, set[str]] = {
    StageStatus.PENDING: {StageStatus.RUNNING, StageStatus.CANCELLED},
    StageStatus.RUNNING: {StageStatus.SUCCEEDED, StageStatus.RETRYING, StageStatus.FAILED, StageStatus.CANCELLED},
    StageStatus.RETRYING: {StageStatus.RUNNING, StageStatus.CANCELLED},
    StageStatus.FAILED: {StageStatus.PENDING},  # replay
    StageStatus.CANCELLED: {StageStatus.PENDING},  # replay
    StageStatus.SUCCEEDED: set(),
}

RUN_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)
RUN_FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
STAGE_WAITING = (StageStatus.PENDING, StageStatus.RETRYING)


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
    given); logs `run.<target>` (`run.started` for running, or `log_name`) or the refusal."""
    allowed = _sources(RUN_TRANSITIONS, target)
    if sources is not None:
        allowed = [s for s in allowed if s in sources]
    updated = Run.objects.filter(id=run_id, status__in=allowed).update(status=target, **fields)
    if updated:
        name = log_name or ("run.started" if target == RunStatus.RUNNING else f"run.{target}")
        log.info(name, run_id=str(run_id), **(log_fields or {}))
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
    log_fields: dict[str, Any] | None = None,
    quiet_refusal: bool = False,
    **fields: Any,
) -> bool:
    """Moves a stage run to `target`; with `holder`, only while that message still holds it."""
    query = StageRun.objects.filter(run_id=run_id, stage=stage, status__in=_sources(STAGE_TRANSITIONS, target))
    if holder is not None:
        query = query.filter(message_id=holder)
    updated = query.update(status=target, **fields)
    if updated:
        if log_fields is not None:
            log.info(f"stage.{target}", run_id=str(run_id), stage=stage, **log_fields)
    elif not quiet_refusal:
        current = StageRun.objects.filter(run_id=run_id, stage=stage).values_list("status", flat=True).first()
        log.warning(
            "stage.transition_refused", run_id=str(run_id), stage=stage, from_status=current, to_status=target
        )
    return bool(updated)


def claim_stage(run_id: Any, stage: str, message_id: str, now: datetime, lease_until: datetime, worker: str) -> bool:
    """Takes a stage to run it. Exactly one message wins: a waiting stage, a stage whose holder's
    lease ran out, or a redelivery of the very message that held it (its consumer died)."""
    claimable = (
        Q(status__in=STAGE_WAITING)
        | Q(status=StageStatus.RUNNING, message_id=message_id)
        | Q(status=StageStatus.RUNNING, lease_until__lt=now)
    )
    return bool(
        StageRun.objects.filter(claimable, run_id=run_id, stage=stage).update(
            status=StageStatus.RUNNING,
            attempts=F("attempts") + 1,
            message_id=message_id,
            lease_until=lease_until,
            started_at=now,
            worker=worker,
            next_attempt_at=None,
        )
    )
