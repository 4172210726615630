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
window: when a window is due, the events already accepted whose runs' messages have not reached
it yet (a worker behind its queue) but which fall within it by their `occurred_at` are taken in
first (`_stragglers`): debounce moves the lead to the newest of them and the window stays open
until that one's message comes; a batch takes them in up to its size. An event accepted after
its window closed opens the next one."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction

from .. import _states as states
from ..models import FlowBatchItem, FlowWindow, Run, RunStatus, StageRun, StageStatus
from .._sql import now as utcnow
from .._status_index import status_is
from ._keys import key_of

HELD = "flow_held"  # message option: the leader's message, held until its window is due


@dataclass
class Admission:
    proceed: bool  # start the run now
    due_in_ms: int = 0  # held: publish the leader's message again after this
    folded_into: str | None = None  # this run ended debounced/batched, into that run
    # debounce: (run, the run it was folded into) of the runs this admission ended debounced
    superseded: list[tuple[str, str]] = field(default_factory=list)
    publish_leader: str | None = None  # batch: full, the leader's message goes now
    batched: list[str] = field(default_factory=list)  # batch, due: runs of late events it took in (ended batched)
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
            return _due_or_held(window, now, rule, run_id)
        if held:
            return Admission(proceed=True)  # its window closed (and another opened): it goes on
        if kind == "batch":
            return _join_batch(window, rule, run_id, event_id, occurred_at, now)
        if occurred_at < window.leader_occurred_at:  # an older event, late: the leader stays
            _fold(run_id, RunStatus.DEBOUNCED, str(window.leader_run), now)
            return Admission(proceed=False, folded_into=str(window.leader_run))
        previous = str(window.leader_run)
        _fold(previous, RunStatus.DEBOUNCED, run_id, now)
        _lead(window, rule, run_id, occurred_at, joined=1)
        admission = _due_or_held(window, now, rule, run_id)
        admission.superseded.insert(0, (previous, run_id))
        return admission


def _lead(window: FlowWindow, rule: "object", run_id: str, occurred_at: datetime, joined: int) -> None:
    """Debounce: `run_id`'s newer event leads the window now, which is due `seconds` after it
    (never later than `max_wait` after the window's first event)."""
    window.leader_run, window.leader_occurred_at = run_id, occurred_at
    due = occurred_at + timedelta(seconds=rule.seconds)
    if rule.max_wait is not None:
        due = min(due, window.opened_at + timedelta(seconds=rule.max_wait))
    window.due_at = due
    window.size += joined
    window.save(update_fields=["leader_run", "leader_occurred_at", "opened_at", "due_at", "size"])


def _due_or_held(window: FlowWindow, now: datetime, rule: "object", run_id: str) -> Admission:
    if window.due_at <= now:
        late = _stragglers(window, rule)
        superseded: list[tuple[str, str]] = []
        batched: list[str] = []
        if window.kind == "debounce" and late:
            if max(t for _, t, _ in late) >= window.leader_occurred_at:
                return _lead_to_newest(window, rule, run_id, late, now)
            superseded = _fold_all(late, run_id, now)  # only older ones: the leader stays
            window.size += len(late)
        elif late:
            batched = _take_into_batch(window, rule, late, now)
        size = window.size
        window.delete()
        return Admission(proceed=True, size=size, superseded=superseded, batched=batched)
    # The relay looks for first stages pending too long: a held one is not, until its window is due.
    StageRun.objects.filter(run_id=window.leader_run, status=StageStatus.PENDING).update(enqueued_at=window.due_at)
    return Admission(proceed=False, due_in_ms=max(1, int((window.due_at - now).total_seconds() * 1000) + 1),
                     size=window.size)


def _stragglers(window: FlowWindow, rule: "object") -> list[tuple[str, datetime, str]]:
    """(run id, occurred_at, event id), oldest first, of the runs of events accepted for this
    window's pipeline and key whose first stage's message has not reached the window yet (still
    pending, not its leader) but which belong to it by their `occurred_at`: a batch's from its
    first event to its due time; a debounce's chained both ways, each within `seconds` of one
    already in, the whole no wider than `max_wait` (its first event moves back when an older one
    is found: `window.opened_at`, saved by the caller)."""
    debounce = window.kind == "debounce"
    seconds = timedelta(seconds=rule.seconds)
    max_wait = timedelta(seconds=rule.max_wait) if debounce and rule.max_wait is not None else None
    found: dict[str, tuple[datetime, str]] = {}
    low, high = window.opened_at, window.due_at
    while True:
        start = low - seconds if debounce else low
        if max_wait is not None:
            start = max(start, high - max_wait)
        rows = (Run.objects.filter(status_is(RunStatus.PENDING), pipeline=window.pipeline, replay_of__isnull=True,
                                   event__occurred_at__gte=start, event__occurred_at__lte=high)
                .exclude(id__in=[window.leader_run, *found])
                .values_list("id", "event__occurred_at", "event_id", "event__payload"))
        new = {str(r): (t, str(e)) for r, t, e, payload in rows if key_of(rule.key, payload or {}) == window.key}
        if not new:
            break
        found.update(new)
        if not debounce:
            break
        low = min(low, *(t for t, _ in new.values()))
        newest = max(window.leader_occurred_at, *(t for t, _ in found.values()))
        high = max(high, newest + seconds if max_wait is None else min(newest + seconds, low + max_wait))
    window.opened_at = low
    return sorted(((r, t, e) for r, (t, e) in found.items()), key=lambda row: (row[1], row[0]))


def _lead_to_newest(window: FlowWindow, rule: "object", run_id: str, late: list[tuple[str, datetime, str]],
                    now: datetime) -> Admission:
    """Debounce, due, with later events of the window still on their way: the newest leads, the
    others (this run too) end debounced into it, and the window waits for the newest's message."""
    newest, newest_at, _ = max(late, key=lambda row: (row[1], row[0]))
    superseded = _fold_all([row for row in late if row[0] != newest], newest, now)
    _fold(run_id, RunStatus.DEBOUNCED, newest, now)
    _lead(window, rule, newest, newest_at, joined=len(late))
    return Admission(proceed=False, folded_into=newest, superseded=superseded, size=window.size)


def _fold_all(late: list[tuple[str, datetime, str]], into: str, now: datetime) -> list[tuple[str, str]]:
    for other, _, _ in late:
        _fold(other, RunStatus.DEBOUNCED, into, now)
    return [(other, into) for other, _, _ in late]


def _take_into_batch(window: FlowWindow, rule: "object", late: list[tuple[str, datetime, str]],
                     now: datetime) -> list[str]:
    """Batch, due: the window's events whose messages are still on their way join it (up to its
    size); returns their runs, now ended batched."""
    leader = str(window.leader_run)
    taken = late[:max(0, rule.size - window.size)]
    for other, occurred_at, event_id in taken:
        FlowBatchItem.objects.create(run_id=leader, event_id=event_id, occurred_at=occurred_at)
        _fold(other, RunStatus.BATCHED, leader, now)
        window.size += 1
    return [other for other, _, _ in taken]


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
