"""Taking, releasing and handing on concurrency slots: operations on a `pipeline._tx.Tx`, run in
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

from ._keys import GLOBAL_KEY, key_of
from ._statements import FlowStatements, statements_for

if TYPE_CHECKING:
    from .._definitions import Pipeline, Stage
    from .._tx import Tx

CONCURRENCY, TOTAL, SINGLETON = "concurrency", "concurrency_total", "singleton"
STAGE, STAGE_TOTAL = "stage:", "stage_total:"  # + the stage's name: a stage's own limit


@dataclass(frozen=True)
class Scope:
    """What one `Concurrency` limits: a pipeline's runs, or the executions of one of its stages."""

    pipeline: str
    rule: str
    total_rule: str
    rules: Any  # the Concurrency
    stage: str | None = None

    @classmethod
    def of_runs(cls, pipeline: "Pipeline") -> "Scope":
        return cls(pipeline.name, CONCURRENCY, TOTAL, pipeline.concurrency)

    @classmethod
    def of_stage(cls, stage: "Stage") -> "Scope":
        return cls(stage.pipeline.name, STAGE + stage.name, STAGE_TOTAL + stage.name, stage.concurrency, stage.name)


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
    """A run (or a stage) taken off the waiting list: its stages now ready, to publish once committed."""

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
    if pipeline.concurrency is not None:
        scope = Scope.of_runs(pipeline)
        key = key_of(scope.rules.key, payload)
        if _take(tx, q, scope, key) is True:
            tx.insert_later(q.slot_head, q.slot_row, (run_key, name, CONCURRENCY, key, d.dt(now)))
            return Admission("pending", CONCURRENCY, key, scope.rules.limit)
        tx.execute(q.insert_waiter, (run_key, name, CONCURRENCY, key, d.uuid(event_id), trace_id, d.dt(now)))
        return Admission("waiting", CONCURRENCY, key, scope.rules.limit)
    if pipeline.singleton is None:  # only its stages have limits (taken when they are claimed)
        return Admission("pending", "", "")
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
    """At a run's end (or cancellation), in its transaction: gives its slots back, or straight to
    what waits for them. A stage still running keeps its own slot until its outcome is written.
    Returns the runs and stages admitted, whose stages the caller publishes after the commit."""
    q, d = statements_for(tx.d.vendor), tx.d
    run_key = d.uuid(run_id)
    if pipeline.stage_flow:
        held = tx.execute(q.slots_of, (run_key,)).fetchall()
        running = {r[0] for r in tx.execute(q.running_stages, (run_key,)).fetchall()}
        held = [(rule, key) for rule, key in held if not (rule.startswith(STAGE) and rule[len(STAGE):] in running)]
        for rule, _ in held:
            tx.execute(q.release_slot, (run_key, rule))
    else:
        held = tx.execute(q.release_slots, (run_key,)).fetchall()
    admitted: list[Admitted] = []
    for rule, key in held:
        scope = _scope(pipeline, rule)
        if scope is not None:
            admitted += _hand_on(tx, q, scope, key, now)
        else:
            tx.execute(q.decrement, (pipeline.name, rule, key))
    for one in admitted:
        one.released_by = str(run_id)
    return admitted


def leave(tx: "Tx", run_id: Any, pipeline: "Pipeline", now: datetime) -> list[Admitted]:
    """A run cancelled: off the waiting list(s) it is on, and its slots released."""
    q, d = statements_for(tx.d.vendor), tx.d
    run_key = d.uuid(run_id)
    for rule, key in tx.execute(q.waiter_of, (run_key,)).fetchall():
        tx.execute(q.lock, (pipeline.name, rule, key)).fetchall()
        tx.execute(q.leave, (run_key, rule))
    return release(tx, run_id, pipeline, now)


def fill(tx: "Tx", scope: Scope, now: datetime) -> list[Admitted]:
    """Admits what waits for `scope` where there is room (the relay's repair, after orphaned
    slots were released); normally a no-op, as every release hands its slot on at once."""
    q = statements_for(tx.d.vendor)
    if scope.rules.total is not None:
        tx.execute(q.lock, (scope.pipeline, scope.total_rule, GLOBAL_KEY)).fetchall()
        return _round_robin(tx, q, scope, now)
    admitted = []
    for (key,) in tx.execute(q.waiting_keys, (scope.pipeline, scope.rule)).fetchall():
        while _take(tx, q, scope, key) is True:
            one = _pop(tx, q, scope, key, now)
            if one is None:
                tx.execute(q.decrement, (scope.pipeline, scope.rule, key))
                break
            admitted.append(one)
    return admitted


def _scope(pipeline: "Pipeline", rule: str) -> Scope | None:
    if rule == CONCURRENCY and pipeline.concurrency is not None:
        return Scope.of_runs(pipeline)
    if rule.startswith(STAGE):
        stage = pipeline.stages.get(rule[len(STAGE):])
        if stage is not None and stage.concurrency is not None:
            return Scope.of_stage(stage)
    return None


def _take(tx: "Tx", q: FlowStatements, scope: Scope, key: str) -> bool | str:
    """Takes a slot (the total's first, then the key's); True, or which one is full."""
    name, rules = scope.pipeline, scope.rules
    if rules.total is not None and not tx.execute(q.acquire, (name, scope.total_rule, GLOBAL_KEY,
                                                              rules.total)).fetchall():
        return TOTAL
    if tx.execute(q.acquire, (name, scope.rule, key, rules.limit)).fetchall():
        return True
    if rules.total is not None:
        tx.execute(q.decrement, (name, scope.total_rule, GLOBAL_KEY))
    return CONCURRENCY


def _hand_on(tx: "Tx", q: FlowStatements, scope: Scope, key: str, now: datetime) -> list[Admitted]:
    name = scope.pipeline
    if scope.rules.total is None:
        if tx.d.vendor != "sqlite":
            tx.execute(q.lock, (name, scope.rule, key)).fetchall()
        one = _pop(tx, q, scope, key, now)
        if one is not None:
            return [one]  # the slot goes to it as it is: the count does not change
        tx.execute(q.decrement, (name, scope.rule, key))
        return []
    tx.execute(q.lock, (name, scope.total_rule, GLOBAL_KEY)).fetchall()
    tx.execute(q.decrement, (name, scope.total_rule, GLOBAL_KEY))
    tx.execute(q.decrement, (name, scope.rule, key))
    return _round_robin(tx, q, scope, now)


def _round_robin(tx: "Tx", q: FlowStatements, scope: Scope, now: datetime) -> list[Admitted]:
    """Fills the free room of a `total` from the waiting keys in turn, after the last key served."""
    name = scope.pipeline
    turn = (tx.execute(q.lock, (name, scope.total_rule, GLOBAL_KEY)).fetchone() or ("",))[0]
    admitted: list[Admitted] = []
    while True:
        keys = sorted(k for (k,) in tx.execute(q.waiting_keys, (name, scope.rule)).fetchall())
        order = [k for k in keys if k > turn] + [k for k in keys if k <= turn]
        progress = False
        for key in order:
            taken = _take(tx, q, scope, key)
            if taken == TOTAL:
                order = []
                break
            if taken is not True:
                continue
            one = _pop(tx, q, scope, key, now)
            if one is None:
                tx.execute(q.decrement, (name, scope.total_rule, GLOBAL_KEY))
                tx.execute(q.decrement, (name, scope.rule, key))
                continue
            admitted.append(one)
            turn, progress = key, True
        if not progress or not order:
            break
    if admitted:
        tx.execute(q.set_turn, (turn, name, scope.total_rule, GLOBAL_KEY))
    return admitted


def _pop(tx: "Tx", q: FlowStatements, scope: Scope, key: str, now: datetime) -> Admitted | None:
    """The oldest run (or stage) waiting for `key`, admitted with the slot the caller holds for it."""
    d = tx.d
    while True:
        row = tx.execute(q.pop, (scope.pipeline, scope.rule, key)).fetchone()
        if row is None:
            return None
        run_key, event_id, trace_id = row
        if scope.stage is None:
            if tx.execute(q.admit_run, (run_key,)).rowcount != 1:
                continue  # no longer waiting (deleted by hand): the next one
            stages = [r[0] for r in tx.execute(q.ready_stages, (d.dt(now), run_key)).fetchall()]
        else:
            if tx.execute(q.admit_stage, (d.dt(now), run_key, scope.stage)).rowcount != 1:
                continue  # its run was cancelled meanwhile: the next one
            stages = [scope.stage]
        tx.insert_later(q.slot_head, q.slot_row, (run_key, scope.pipeline, scope.rule, key, d.dt(now)))
        return Admitted(d.load_uuid(run_key), d.load_uuid(event_id), trace_id, scope.pipeline, scope.rule, key,
                        stages)
