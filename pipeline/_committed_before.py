"""Outcomes that committed before their writer knew it.

A COMMIT can reach the database while its answer does not: the connection is cut as PostgreSQL
stops, and the writer cannot tell whether the batch committed. It then runs the batch again, one
operation at a time, once the store is back (`pipeline._writer`). An outcome's write is
conditional on the claim that still holds the stage (its message id and attempt), so run again
after it committed, it matches no row, exactly as when another message took the stage over.
Read as "someone else's", the worker would drop an outcome that is in fact its own: a child it
claimed to run inline would be left held, and the run would stall until the relay's lease repair.

One claim is one (message id, attempt): a stage found in this outcome with ours is our own
earlier commit. What that commit did is then read back from the rows rather than done twice (a
fan-in is not counted down again, a slot not given back twice, no second outcome event), and the
worker goes on as if the first answer had arrived: it logs the transition, runs the inline child,
publishes the children not yet claimed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._stage_store import Done, Failed, FailureRecord, SuccessRecord
    from ._tx import Tx


def success(record: "SuccessRecord", tx: "Tx", run_key: Any, done: "Done") -> "Done | None":
    """`done` filled with what `record` did when it committed before, or None if the stage is not
    in its success."""
    finished_at = _own_earlier_outcome(tx, run_key, record.stage.name, "succeeded", record.message_id,
                                       record.attempt)
    if finished_at is None:
        return None
    q, d = tx.q, tx.d
    done.recovered = True
    if not record.children:
        ended = _run_ended_with(tx, run_key, "succeeded", finished_at)
        done.finished, record.total_ms = ended is not None, ended or 0.0
        return done
    names = [child.name for child in record.children]
    rows = tx.execute(q.in_list(q.children_states, len(names), d), (run_key, *names)).fetchall()
    found = {name: (status, holder, remaining) for name, status, holder, remaining in rows}
    if record.inline is not None:
        done.inline = found.get(record.inline.name, ())[:2] == ("running", record.message_id)
    else:  # published again unless claimed already: a claim takes a stage once, however often it is sent
        done.ready = [child for child in record.children if found.get(child.name, ())[::2] == ("pending", 0)]
    return done


def failure(record: "FailureRecord", tx: "Tx", run_key: Any, failed: "Failed") -> "Failed | None":
    """`failed` filled with what `record` did when it committed before, or None if the stage is
    not in its outcome."""
    status = "failed" if record.final else "retrying"
    finished_at = _own_earlier_outcome(tx, run_key, record.stage.name, status, record.message_id, record.attempt)
    if finished_at is None:
        return None
    ended = _run_ended_with(tx, run_key, "failed", finished_at) if record.final else None
    record.total_ms = ended or 0.0
    failed.run_ended, failed.recovered = ended is not None, True
    return failed


def _own_earlier_outcome(tx: "Tx", run_key: Any, stage: str, status: str, message_id: str, attempt: int) -> Any:
    """The stage row's finished_at if it is in `status` by this claim, else None. That instant is
    also the run's finished_at if the same write ended the run."""
    row = tx.execute(tx.q.outcome_of, (run_key, stage)).fetchone()
    if row is None or tuple(row[:3]) != (status, message_id, attempt):
        return None
    return row[3]


def _run_ended_with(tx: "Tx", run_key: Any, status: str, finished_at: Any) -> float | None:
    """The run's duration if it ended in `status` at `finished_at` (by the same write), else None."""
    ended, at, duration_ms = tx.execute(tx.q.run_end, (run_key,)).fetchone()
    return float(duration_ms or 0.0) if ended == status and at == finished_at else None
