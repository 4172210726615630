"""Repairing runs: replay a failed run from where it stopped (or from the start), cancel a run."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterator

from django.db import transaction
from django.utils import timezone

from . import _outcomes as outcomes, _states as states
from ._definitions import registry
from .errors import OperationRefused, RunNotFound
from .flow import _slots_gate as slots_gate
from .logging import get_logger
from .models import Run, StageRun
from ._publisher import carried_priority, publish_admitted, publish_ready
from ._runs import create_runs
from ._status_index import status_is
from ._statuses import ACTIVE_RUN_STATUSES, WAITING_STAGE_STATUSES, RunStatus, StageStatus

log = get_logger("pipeline.operations")

REPLAYABLE = (RunStatus.FAILED, RunStatus.CANCELLED)


def _get_run(run_id: str) -> Run:
    try:
        uuid.UUID(str(run_id))
        return Run.objects.select_related("event").get(id=run_id)
    except (ValueError, Run.DoesNotExist):
        raise RunNotFound(f"no run with id {run_id!r}") from None


def replay(run_id: str, *, from_start: bool = False) -> str:
    """Resumes a failed or cancelled run from its unfinished stages, keeping the results of the
    stages that succeeded; with `from_start`, starts a new run of the same event. Returns the id
    of the run that will now make progress."""
    run = _get_run(run_id)
    if run.status not in REPLAYABLE:
        raise OperationRefused(f"run {run_id} is {run.status}; only failed or cancelled runs can be replayed")
    pipeline = registry.get(run.pipeline)
    if from_start:
        with transaction.atomic():
            (new_run,) = create_runs(run.event, [pipeline], trigger=f"replay:{run.id}", replay_of=run)
            roots = pipeline.roots
            if not pipeline.flow or slots_gate.admit_replay(new_run, run.event, pipeline) == RunStatus.PENDING:
                transaction.on_commit(lambda: _enqueue(roots, new_run, run))
        log.info("run.replayed", run_id=str(new_run.id), replay_of=str(run.id), pipeline=run.pipeline,
                 event_id=str(run.event_id), trace_id=run.event.trace_id, from_start=True)
        return str(new_run.id)

    now = timezone.now()
    with transaction.atomic():
        Run.objects.select_for_update().filter(id=run.id).first()
        rows = {s.stage: s for s in StageRun.objects.filter(run=run)}
        succeeded = {name for name, row in rows.items() if row.status == StageStatus.SUCCEEDED}
        ready = [
            stage for name, stage in pipeline.stages.items()
            if name not in succeeded and all(p in succeeded for p in stage.after)
        ]
        for stage in ready:
            row = rows.get(stage.name)
            if row is None:
                StageRun.objects.create(run=run, stage=stage.name, enqueued_at=now)
            else:
                states.move_stage(run.id, stage.name, StageStatus.PENDING, attempts=0, enqueued_at=now,
                                  finished_at=None, message_id="", lease_until=None, parents_remaining=0,
                                  quiet_refusal=True)
        ready_names = {stage.name for stage in ready}
        for name, row in rows.items():
            if name not in ready_names and row.status in (StageStatus.CANCELLED, StageStatus.FAILED):
                # A fan-in some of whose parents had succeeded: waiting again, its count kept; the
                # last parent to succeed makes it ready (and publishes it).
                states.move_stage(run.id, name, StageStatus.PENDING, attempts=0, enqueued_at=None,
                                  finished_at=None, message_id="", lease_until=None, quiet_refusal=True,
                                  log_fields={"pipeline": run.pipeline, "reason": "replayed: waits for its other parents",
                                              "parents_remaining": row.parents_remaining})
        target = slots_gate.admit_replay(run, run.event, pipeline) if pipeline.flow else RunStatus.PENDING
        if target == RunStatus.WAITING:  # its key has no free slot (pipeline.flow)
            _wait_again(run, ready)
            return str(run.id)
        if not states.move_run(run.id, RunStatus.RUNNING, sources=list(REPLAYABLE), log_name="run.replayed",
                               finished_at=None, error="", duration_ms=None,
                               log_fields={"pipeline": run.pipeline, "event_id": str(run.event_id),
                                           "trace_id": run.event.trace_id, "from_start": False,
                                           "stages": [s.name for s in ready]}):
            raise OperationRefused(f"run {run_id} changed state while being replayed; try again")
        transaction.on_commit(lambda: _enqueue(ready, run, run))
    return str(run.id)


def _wait_again(run: Run, ready: list) -> None:
    """A replayed run of a flow-controlled pipeline whose key has no free slot."""
    if not states.move_run(run.id, RunStatus.WAITING, sources=list(REPLAYABLE), log_name="run.replayed",
                           finished_at=None, error="", duration_ms=None,
                           log_fields={"pipeline": run.pipeline, "event_id": str(run.event_id),
                                       "trace_id": run.event.trace_id, "from_start": False, "waiting": True,
                                       "stages": [s.name for s in ready]}):
        raise OperationRefused(f"run {run.id} changed state while being replayed; try again")


def _enqueue(stages: list, target: Run, source: Run) -> None:
    publish_ready(stages, str(target.id), str(source.event_id), source.event.trace_id,
                  carried=carried_priority(source.event.priority))


def cancel(run_id: str) -> None:
    """No further stage of the run starts; a running stage sees `ctx.cancelled`; the run ends cancelled."""
    run = _get_run(run_id)
    if run.status not in ACTIVE_RUN_STATUSES:
        raise OperationRefused(f"run {run_id} is {run.status}; only waiting, pending or running runs can be cancelled")
    now = timezone.now()
    with transaction.atomic():
        if not states.move_run(run.id, RunStatus.CANCELLED, finished_at=now,
                               log_fields={"pipeline": run.pipeline, "event_id": str(run.event_id),
                                           "trace_id": run.event.trace_id}):
            raise OperationRefused(f"run {run_id} finished while being cancelled")
        outcomes.emit_outcome(str(run.id), RunStatus.CANCELLED, run.pipeline)
        admitted = slots_gate.cancelled(str(run.id), run.pipeline)  # its slot handed on, or off the waiting list
        transaction.on_commit(lambda: publish_admitted(admitted))
        for row in StageRun.objects.filter(run=run, status__in=WAITING_STAGE_STATUSES):
            states.move_stage(run.id, row.stage, StageStatus.CANCELLED, finished_at=now,
                              log_fields={"pipeline": run.pipeline, "reason": "run cancelled"})


def failed_runs(pipeline: str, since: datetime | None = None, until: datetime | None = None) -> Iterator[Run]:
    query = Run.objects.filter(status_is(RunStatus.FAILED), pipeline=pipeline)
    if since:
        query = query.filter(created_at__gte=since)
    if until:
        query = query.filter(created_at__lt=until)
    return query.order_by("created_at").iterator()
