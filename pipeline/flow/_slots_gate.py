"""The concurrency half of flow control (runs waiting for slots) on the ORM's connection: the
log lines of each wait and drop (written once their transaction commits), replays and
cancellations, the relay's repair, and why a run waits. Publishing what it admits is
`pipeline._publisher.publish_admitted`'s (the callers'). The rate/window half is `gate`'s."""
from __future__ import annotations

from typing import Any

from django.db import transaction

from .. import _writer as writer
from .._definitions import registry
from ..errors import OperationRefused
from ..logging import get_logger
from .._sql import now as utcnow
from ._lines import log_admission, runs_cancelled
from ._slots import STAGE, Admitted, _scope, admit, fill, leave, release

log = get_logger("pipeline.flow")


def admit_replay(run: Any, event: Any, pipeline: Any) -> str:
    """Inside a replay's transaction: takes the replayed run's slot (returns `pending`), or puts
    it on the waiting list (`waiting`; a new run is moved there); a singleton whose key is busy
    raises OperationRefused (mode skip) or cancels the run in progress (mode cancel)."""
    from .. import _states as states  # here: states imports the models, which need the app registry (and import this package)

    admission = writer.run_direct(lambda tx: admit(tx, run.id, event.id, event.trace_id, pipeline, event.payload,
                                                   utcnow()))
    if admission.status == "skipped":
        raise OperationRefused(f"run {run.id}: a run of its singleton key {admission.key!r} is in progress "
                               f"({', '.join(admission.holders)}); try again once it has ended")
    ids = {"run_id": str(run.id), "event_id": str(event.id), "trace_id": event.trace_id, "pipeline": pipeline.name}
    if admission.status == "waiting" and run.status == "pending":  # a replay from the start
        states.move_run(run.id, "waiting", log_name="run.waiting",
                        log_fields={k: v for k, v in ids.items() if k != "run_id"})
    log_admission(admission, ids)
    runs_cancelled(admission.replaced, pipeline.name)
    return admission.status


def cancelled(run_id: str, pipeline_name: str) -> list[Admitted]:
    """Inside the transaction that cancels a run: off the waiting list, or its slot handed on;
    returns the runs admitted, for the caller to publish once committed."""
    pipeline = registry.pipelines.get(pipeline_name)
    if pipeline is None or not pipeline.flow:
        return []
    return writer.run_direct(lambda tx: leave(tx, run_id, pipeline, utcnow()))


def repair(limit: int = 500) -> list[Admitted]:
    """The relay's pass: slots held by runs that are over (or gone) are released (a stage's own
    slot only once that stage no longer runs), and what waits is admitted where there is room.
    Every end releases its slots in its own transaction, so this finds something only after rows
    were changed by hand. Returns what it admitted (committed), for the caller to publish."""
    # here: the models need the app registry, and the publisher imports this module at its top
    from ..models import ConcurrencySlot, ConcurrencyWaiter, Run, StageRun
    from .._status_index import status_in
    from .._statuses import ACTIVE_RUN_STATUSES, ADMITTED_RUN_STATUSES

    live = Run.objects.filter(status_in(ADMITTED_RUN_STATUSES)).values("id")
    orphans = []
    for run_id, name, rule in ConcurrencySlot.objects.exclude(run_id__in=live).values_list(
            "run_id", "pipeline", "rule")[:limit]:
        if rule.startswith(STAGE) and StageRun.objects.filter(run_id=run_id, stage=rule[len(STAGE):],
                                                              status="running").exists():
            continue  # its stage is still running: it gives the slot back with its outcome
        orphans.append((run_id, name))
    ConcurrencyWaiter.objects.exclude(
        run_id__in=Run.objects.filter(status_in(ACTIVE_RUN_STATUSES)).values("id")).delete()
    admitted: list[Admitted] = []
    with transaction.atomic():
        for run_id, name in dict.fromkeys(orphans):
            pipeline = registry.pipelines.get(name)
            if pipeline is not None:
                admitted += writer.run_direct(lambda tx: release(tx, run_id, pipeline, utcnow()))
            log.warning("flow.slot_repaired", run_id=str(run_id), pipeline=name, reason="its run is over or gone")
        names = {name for _, name in orphans}  # (a release hands its slot on already; this fills the rest)
        for name, rule in set(ConcurrencyWaiter.objects.filter(pipeline__in=names).values_list("pipeline", "rule")):
            pipeline = registry.pipelines.get(name)
            scope = _scope(pipeline, rule) if pipeline is not None else None
            if scope is not None:
                admitted += writer.run_direct(lambda tx: fill(tx, scope, utcnow()))
    return admitted


def wait_reason(run_id: str) -> dict[str, Any] | None:
    """Why a waiting run (or a waiting stage of it: `stage`) waits: the rule, the key, the limit,
    who holds the slots, how many wait ahead of it. None if nothing of it waits."""
    from ..models import ConcurrencySlot, ConcurrencyWaiter  # here: as in repair()

    waiter = ConcurrencyWaiter.objects.filter(run_id=run_id).order_by("id").first()
    if waiter is None:
        return None
    pipeline = registry.pipelines.get(waiter.pipeline)
    scope = _scope(pipeline, waiter.rule) if pipeline is not None else None
    rules = scope.rules if scope is not None else None
    holders = ConcurrencySlot.objects.filter(pipeline=waiter.pipeline, rule=waiter.rule, key=waiter.key)
    ahead = ConcurrencyWaiter.objects.filter(pipeline=waiter.pipeline, rule=waiter.rule, key=waiter.key,
                                             id__lt=waiter.id).count()
    return {
        "rule": "concurrency", "stage": scope.stage if scope is not None else None, "key": waiter.key,
        "key_field": rules.key if rules else None,
        "limit": rules.limit if rules else None, "total": rules.total if rules else None,
        "in_progress": [str(r) for r in holders.values_list("run_id", flat=True)[:20]],
        "ahead": ahead, "since": waiter.since,
    }
