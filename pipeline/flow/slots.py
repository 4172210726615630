"""Taking, releasing and handing on concurrency slots: operations on a `pipeline.tx.Tx`, run in
the transaction of the change they belong to (a run's creation, its end, its cancellation), so
a slot is never lost between two transactions and never held twice.

The database is the arbiter across processes and hosts: a slot is taken by a conditional upsert
on its counter (`held < limit`); everything that reads or changes a key's waiting list first
holds that counter row (PostgreSQL's row lock; SQLite has one writer at a time). A run's end
hands its slot to the oldest run waiting for the same key (per-key limit), or with a `total`, to
the next key in turn (round-robin). Waiting runs hold no thread and nothing polls for them."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .keys import GLOBAL_KEY, key_of
from .statements import FlowStatements, statements_for

if TYPE_CHECKING:
    from ..definitions import Pipeline
    from ..tx import Tx

CONCURRENCY, TOTAL, SINGLETON = "concurrency", "concurrency_total", "singleton"


@dataclass
class Admission:
    """What became of a new (or replayed) run: `pending` (it holds its slot), `waiting`, or
    `skipped` (a singleton's key was busy); `replaced`: the runs a singleton start cancelled."""

    status: str
    rule: str
    key: str
    limit: int = 1
    holders: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


@dataclass
class Admitted:
    """A run taken off the waiting list: its stages now ready, to publish once committed."""

    run_id: str
    event_id: str
    trace_id: str
    pipeline: str
    rule: str
    key: str
    stages: list[str]
    released_by: str = ""


def admit(tx: "Tx", run_id: Any, event_id: Any, trace_id: str, pipeline: "Pipeline", payload: dict,
          now: datetime) -> Admission:
    """Takes the run's slot, or puts it on the waiting list, or (singleton) skips it or cancels
    the run in progress; the caller writes the run with the status returned."""
    q, d = statements_for(tx.d.vendor), tx.d
    name, run_key = pipeline.name, d.uuid(run_id)
    rules = pipeline.concurrency
    if rules is not None:
        key = key_of(rules.key, payload)
        if _take(tx, q, name, rules, key) is True:
            tx.insert_later(q.slot_head, q.slot_row, (run_key, name, CONCURRENCY, key, d.dt(now)))
            return Admission("pending", CONCURRENCY, key, rules.limit)
        tx.execute(q.insert_waiter, (run_key, name, CONCURRENCY, key, d.uuid(event_id), trace_id, d.dt(now)))
        return Admission("waiting", CONCURRENCY, key, rules.limit)
    single = pipeline.singleton
    key = key_of(single.key, payload)
    if tx.execute(q.acquire, (name, SINGLETON, key, 1)).fetchall():
        tx.execute(q.insert_slot, (run_key, name, SINGLETON, key, d.dt(now)))
        return Admission("pending", SINGLETON, key)
    holders = [d.load_uuid(r[0]) for r in tx.execute(q.holders, (name, SINGLETON, key)).fetchall()]
    if single.mode == "skip" and holders:
        return Admission("skipped", SINGLETON, key, holders=holders)
    replaced = []
    for old in holders:
        if tx.execute(q.cancel_run, (d.dt(now), d.uuid(old))).rowcount == 1:
            tx.execute(q.cancel_stages, (d.dt(now), d.uuid(old)))
            replaced.append(old)
        tx.execute(q.transfer, (run_key, d.dt(now), d.uuid(old), SINGLETON))
    if not holders:  # counted but held by nobody (a slot row deleted by hand): this run takes it
        tx.execute(q.insert_slot, (run_key, name, SINGLETON, key, d.dt(now)))
    return Admission("pending", SINGLETON, key, holders=holders, replaced=replaced)


def release(tx: "Tx", run_id: Any, pipeline: "Pipeline", now: datetime) -> list[Admitted]:
    """At a run's end, in its transaction: gives its slot back, or straight to the next waiting
    run. Returns the runs admitted, whose stages the caller publishes after the commit."""
    q, d = statements_for(tx.d.vendor), tx.d
    admitted: list[Admitted] = []
    for rule, key in tx.execute(q.release_slots, (d.uuid(run_id),)).fetchall():
        if rule == CONCURRENCY and pipeline.concurrency is not None:
            admitted += _hand_on(tx, q, pipeline, key, now)
        else:
            tx.execute(q.decrement, (pipeline.name, rule, key))
    for one in admitted:
        one.released_by = str(run_id)
    return admitted


def leave(tx: "Tx", run_id: Any, pipeline: "Pipeline", now: datetime) -> list[Admitted]:
    """A run cancelled: off the waiting list if it waited, else its slot released."""
    q, d = statements_for(tx.d.vendor), tx.d
    run_key = d.uuid(run_id)
    waited = tx.execute(q.waiter_of, (run_key,)).fetchall()
    for rule, key in waited:
        tx.execute(q.lock, (pipeline.name, rule, key)).fetchall()
        tx.execute(q.leave, (run_key,))
    return [] if waited else release(tx, run_id, pipeline, now)


def fill(tx: "Tx", pipeline: "Pipeline", now: datetime) -> list[Admitted]:
    """Admits waiting runs for which there is room (the relay's repair, after orphaned slots
    were released); normally a no-op, as every release hands its slot on at once."""
    rules = pipeline.concurrency
    if rules is None:
        return []
    q = statements_for(tx.d.vendor)
    if rules.total is not None:
        tx.execute(q.lock, (pipeline.name, TOTAL, GLOBAL_KEY)).fetchall()
        return _round_robin(tx, q, pipeline, now)
    admitted = []
    for (key,) in tx.execute(q.waiting_keys, (pipeline.name, CONCURRENCY)).fetchall():
        while _take(tx, q, pipeline.name, rules, key) is True:
            one = _pop(tx, q, pipeline, key, now)
            if one is None:
                tx.execute(q.decrement, (pipeline.name, CONCURRENCY, key))
                break
            admitted.append(one)
    return admitted


def _take(tx: "Tx", q: FlowStatements, name: str, rules: Any, key: str) -> bool | str:
    """Takes a slot (the total's first, then the key's); True, or which one is full."""
    if rules.total is not None and not tx.execute(q.acquire, (name, TOTAL, GLOBAL_KEY, rules.total)).fetchall():
        return TOTAL
    if tx.execute(q.acquire, (name, CONCURRENCY, key, rules.limit)).fetchall():
        return True
    if rules.total is not None:
        tx.execute(q.decrement, (name, TOTAL, GLOBAL_KEY))
    return CONCURRENCY


def _hand_on(tx: "Tx", q: FlowStatements, pipeline: "Pipeline", key: str, now: datetime) -> list[Admitted]:
    name = pipeline.name
    if pipeline.concurrency.total is None:
        if tx.d.vendor != "sqlite":
            tx.execute(q.lock, (name, CONCURRENCY, key)).fetchall()
        one = _pop(tx, q, pipeline, key, now)
        if one is not None:
            return [one]  # the slot goes to it as it is: the count does not change
        tx.execute(q.decrement, (name, CONCURRENCY, key))
        return []
    tx.execute(q.lock, (name, TOTAL, GLOBAL_KEY)).fetchall()
    tx.execute(q.decrement, (name, TOTAL, GLOBAL_KEY))
    tx.execute(q.decrement, (name, CONCURRENCY, key))
    return _round_robin(tx, q, pipeline, now)


def _round_robin(tx: "Tx", q: FlowStatements, pipeline: "Pipeline", now: datetime) -> list[Admitted]:
    """Fills the free room of a `total` from the waiting keys in turn, after the last key served."""
    name, rules = pipeline.name, pipeline.concurrency
    turn = (tx.execute(q.lock, (name, TOTAL, GLOBAL_KEY)).fetchone() or ("",))[0]
    admitted: list[Admitted] = []
    while True:
        keys = sorted(k for (k,) in tx.execute(q.waiting_keys, (name, CONCURRENCY)).fetchall())
        order = [k for k in keys if k > turn] + [k for k in keys if k <= turn]
        progress = False
        for key in order:
            taken = _take(tx, q, name, rules, key)
            if taken == TOTAL:
                order = []
                break
            if taken is not True:
                continue
            one = _pop(tx, q, pipeline, key, now)
            if one is None:
                tx.execute(q.decrement, (name, TOTAL, GLOBAL_KEY))
                tx.execute(q.decrement, (name, CONCURRENCY, key))
                continue
            admitted.append(one)
            turn, progress = key, True
        if not progress or not order:
            break
    if admitted:
        tx.execute(q.set_turn, (turn, name, TOTAL, GLOBAL_KEY))
    return admitted


def _pop(tx: "Tx", q: FlowStatements, pipeline: "Pipeline", key: str, now: datetime) -> Admitted | None:
    """The oldest run waiting for `key`, admitted with the slot the caller holds for it."""
    d = tx.d
    while True:
        row = tx.execute(q.pop, (pipeline.name, CONCURRENCY, key)).fetchone()
        if row is None:
            return None
        run_key, event_id, trace_id = row
        if tx.execute(q.admit_run, (run_key,)).rowcount != 1:
            continue  # no longer waiting (deleted by hand): the next one
        tx.insert_later(q.slot_head, q.slot_row, (run_key, pipeline.name, CONCURRENCY, key, d.dt(now)))
        stages = [r[0] for r in tx.execute(q.ready_stages, (d.dt(now), run_key)).fetchall()]
        return Admitted(d.load_uuid(run_key), d.load_uuid(event_id), trace_id, pipeline.name, CONCURRENCY, key,
                        stages)
