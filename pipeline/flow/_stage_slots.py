"""A stage's own concurrency limit (`@pipeline.stage(concurrency=Concurrency(...))`): at most N
executions of the stage in progress per key, across every worker.

Taken when the stage is claimed (the one place every execution passes, whether its message was
published by a parent, a replay or the relay), in the claim's transaction; held while the
attempt runs and given back when its outcome is written (success, retry or failure), so a
retry takes a slot again like any start. A stage over its limit moves to `waiting` and its
message is done: it holds no thread; the slot given back hands it on, and the stage is then
published again. A worker that dies mid-stage keeps the slot with the stage: the redelivered
message (or the relay's, once the stage's lease ran out) finds it held by its own stage and goes
on with it, so a slot is never held twice."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._keys import key_of
from ._slots import Admitted, Scope, _hand_on, _take
from ._statements import statements_for

if TYPE_CHECKING:
    from .._definitions import Stage
    from .._run_info import RunInfo
    from .._tx import Tx

HELD, TOOK = "held", "took"


def gate(tx: "Tx", stage: "Stage", info: "RunInfo", now: datetime) -> Any:
    """Before the claim: `HELD` (this stage holds its slot already: a redelivery, a takeover),
    `TOOK` (a free slot taken), `("waiting", key)` (the stage now waits), or None (the stage
    cannot be claimed at all: a duplicate or stale message; the claim says so)."""
    q, d = statements_for(tx.d.vendor), tx.d
    scope = Scope.of_stage(stage)
    run_key = d.uuid(info.run_id)
    if tx.execute(q.holds, (run_key, scope.rule)).fetchone():
        return HELD
    if info.payload is None or not info.event_id:
        row = tx.execute(tx.q.event_fields, (run_key,)).fetchone()
        if row is None:
            return None
        event_id, info.event_type, payload, occurred, trace_id = row
        info.payload, info.occurred_at = d.load_json(payload), d.load_dt(occurred)
        info.event_id, info.trace_id = info.event_id or d.load_uuid(event_id), info.trace_id or trace_id
    key = key_of(scope.rules.key, info.payload or {})
    if _take(tx, q, scope, key) is True:
        tx.execute(q.insert_slot, (run_key, scope.pipeline, scope.rule, key, d.dt(now)))
        return TOOK
    if tx.execute(q.stage_to_waiting, (run_key, stage.name, run_key)).rowcount != 1:
        return None
    tx.execute(q.insert_waiter, (run_key, scope.pipeline, scope.rule, key, d.uuid(info.event_id), info.trace_id,
                                 d.dt(now)))
    return ("waiting", key)


def release_stage(tx: "Tx", run_id: Any, stage: "Stage", now: datetime) -> list[Admitted]:
    """When an attempt's outcome is written (or its claim did not happen after all): the stage's
    slot back, or straight to the next execution waiting for it."""
    q, d = statements_for(tx.d.vendor), tx.d
    scope = Scope.of_stage(stage)
    row = tx.execute(q.release_slot, (d.uuid(run_id), scope.rule)).fetchone()
    if row is None:
        return []
    admitted = _hand_on(tx, q, scope, row[0], now)
    for one in admitted:
        one.released_by = str(run_id)
    return admitted

