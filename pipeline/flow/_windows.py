"""Debounce and batch windows in the run store: one `FlowWindow` row per pipeline and key while
a window is open, changed under its row lock, so every worker process and host agrees on it.

Every event still makes its own run (nothing accepted is lost from sight); the first stage's
message of each run passes here before it may start:
- no open window: it opens one and becomes its leader, and its message is held (re-published
  with a delay, not kept in a worker thread) until the window is due;
- debounce, an open window: the newer event (by `occurred_at`) leads; the other run ends
  `debounced` (its `error` names the run that carries on), and the window is due `seconds`
  after the newer event, but never later than `max_wait` after the window's first event;
- batch, an open window: the run ends `batched` and its event is added to the leader's batch
  (`FlowBatchItem`); the window closes at once when `size` events are in (the leader's message
  is published now), else `seconds` after its first event;
- the leader's held message, once due, closes the window and goes on to start its run.

Times are the events' `occurred_at`, so a slow worker does not change which events share a
window; an event that reaches a window after it closed opens the next one."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from .. import _states as states
from ..models import FlowBatchItem, FlowWindow, Run, RunStatus, StageRun, StageStatus
from .._sql import now as utcnow

HELD = "flow_held"  # message option: the leader's message, held until its window is due


@dataclass
class Admission:
    proceed: bool  # start the run now
    due_in_ms: int = 0  # held: publish the leader's message again after this
    folded_into: str | None = None  # this run ended debounced/batched, into that run
    superseded: str | None = None  # debounce: this earlier leader's run ended debounced
    publish_leader: str | None = None  # batch: full, the leader's message goes now
    size: int = 0
    gone: bool = False  # the run is over (folded, cancelled...): this message has nothing to do


def admit(pipeline: "object", kind: str, run_id: str, event_id: str, occurred_at: datetime, key: str,
          held: bool) -> Admission:
    """Decides, in one transaction, what the first stage's message of `run_id` does (see above)."""
    rule = pipeline.debounce if kind == "debounce" else pipeline.batch
    name = pipeline.name

    def status() -> str | None:
        return Run.objects.filter(id=run_id).values_list("status", flat=True).first()

    now_status = status()
    if now_status != RunStatus.PENDING:
        # Folded into another run, or over: nothing to do. Running: a redelivery, or a replay; the claim decides.
        return Admission(proceed=now_status == RunStatus.RUNNING, gone=now_status != RunStatus.RUNNING)
    # Locks: the window's row first, then runs are changed (never a run's row first: two messages
    # of one window taking them in opposite orders would deadlock on PostgreSQL).
    with transaction.atomic():
        window = None
        while window is None:  # (PostgreSQL: a window closed between the two statements is opened again)
            if not held:  # a held leader whose window is gone (closed when full) opens none: it goes on
                FlowWindow.objects.bulk_create([FlowWindow(
                    kind=kind, pipeline=name, key=key, leader_run=run_id, leader_occurred_at=occurred_at,
                    opened_at=occurred_at, due_at=occurred_at + timedelta(seconds=rule.seconds), size=1)],
                    ignore_conflicts=True)
            window = FlowWindow.objects.select_for_update().filter(kind=kind, pipeline=name, key=key).first()
            if window is None and held:
                return Admission(proceed=True)
        now = utcnow()  # read under the window's lock
        now_status = status()
        if now_status != RunStatus.PENDING:  # folded, cancelled or started meanwhile
            if str(window.leader_run) == str(run_id):
                window.delete()
            return Admission(proceed=now_status == RunStatus.RUNNING, gone=now_status != RunStatus.RUNNING)
        if str(window.leader_run) == str(run_id):
            if kind == "batch" and not FlowBatchItem.objects.filter(run_id=run_id, event_id=event_id).exists():
                FlowBatchItem.objects.create(run_id=run_id, event_id=event_id, occurred_at=occurred_at)
            return _due_or_held(window, now)
        if held:
            return Admission(proceed=True)  # its window closed (and another opened): it goes on
        if kind == "batch":
            return _join_batch(window, rule, run_id, event_id, occurred_at, now)
        if occurred_at < window.leader_occurred_at:  # an older event, late: the leader stays
            _fold(run_id, RunStatus.DEBOUNCED, str(window.leader_run), now)
            return Admission(proceed=False, folded_into=str(window.leader_run))
        previous = str(window.leader_run)
        _fold(previous, RunStatus.DEBOUNCED, run_id, now)
        window.leader_run, window.leader_occurred_at = run_id, occurred_at
        due = occurred_at + timedelta(seconds=rule.seconds)
        if rule.max_wait is not None:
            due = min(due, window.opened_at + timedelta(seconds=rule.max_wait))
        window.due_at = due
        window.size += 1
        window.save(update_fields=["leader_run", "leader_occurred_at", "due_at", "size"])
        admission = _due_or_held(window, now)
        admission.superseded = previous
        return admission


def _due_or_held(window: FlowWindow, now: datetime) -> Admission:
    if window.due_at <= now:
        size = window.size
        window.delete()
        return Admission(proceed=True, size=size)
    # The relay looks for first stages pending too long: a held one is not, until its window is due.
    StageRun.objects.filter(run_id=window.leader_run, status=StageStatus.PENDING).update(enqueued_at=window.due_at)
    return Admission(proceed=False, due_in_ms=max(1, int((window.due_at - now).total_seconds() * 1000) + 1),
                     size=window.size)


def _join_batch(window: FlowWindow, rule: "object", run_id: str, event_id: str, occurred_at: datetime,
                now: datetime) -> Admission:
    leader = str(window.leader_run)
    FlowBatchItem.objects.create(run_id=leader, event_id=event_id, occurred_at=occurred_at)
    _fold(run_id, RunStatus.BATCHED, leader, now)
    window.size += 1
    if window.size >= rule.size:
        size = window.size
        window.delete()
        return Admission(proceed=False, folded_into=leader, publish_leader=leader, size=size)
    window.save(update_fields=["size"])
    return Admission(proceed=False, folded_into=leader, size=window.size)


def _fold(run_id: str, status: str, into: str, now: datetime) -> None:
    """Ends a pending run folded into run `into` (its stages will not start)."""
    how = "debounced: a later event's run carries on" if status == RunStatus.DEBOUNCED else "batched"
    if states.move_run(run_id, status, sources=[RunStatus.PENDING], finished_at=now, error=f"{how}: run {into}",
                       log_fields={"folded_into": into}):
        for stage in StageRun.objects.filter(run_id=run_id, status=StageStatus.PENDING).values_list("stage", flat=True):
            states.move_stage(run_id, stage, StageStatus.CANCELLED, finished_at=now, quiet_refusal=True)


def batch_of(run_id: str) -> list[tuple[str, datetime]]:
    """The (event id, occurred_at) of the events of the batch `run_id` carries, oldest first."""
    return [(str(e), t) for e, t in FlowBatchItem.objects.filter(run_id=run_id)
            .order_by("occurred_at", "id").values_list("event_id", "occurred_at")]
