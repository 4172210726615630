"""Flow control's SQL on the run store's raw connection (`pipeline._tx.Tx`), per backend, written
once. The status changes follow `pipeline._states`' tables (their WHERE clauses are built from
them), so states.py stays the one place that says which transition is allowed."""
from __future__ import annotations

from functools import lru_cache

from .. import _states as states
from ..models import RunStatus
from .._sql import Dialect, dialect_for

COUNTER = "pipeline_concurrencycounter"
SLOT = "pipeline_concurrencyslot"
WAITER = "pipeline_concurrencywaiter"


def _in(statuses: list[str]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


class FlowStatements:
    def __init__(self, d: Dialect) -> None:
        pg = d.vendor == "postgresql"
        where_key = "pipeline = ? AND rule = ? AND key = ?"
        # Takes a slot if fewer than `limit` are held (no row back otherwise); on PostgreSQL the
        # counter row stays locked to the end of the transaction either way, which orders every
        # change to that key's slots and waiting list.
        self.acquire = d.sql(
            f"INSERT INTO {COUNTER} (pipeline, rule, key, held, turn) VALUES (?, ?, ?, 1, '') "
            f"ON CONFLICT (pipeline, rule, key) DO UPDATE SET held = {COUNTER}.held + 1 "
            f"WHERE {COUNTER}.held < ? RETURNING held"
        )
        # Locks the counter row before its waiting list is read (PostgreSQL; SQLite has one writer).
        self.lock = d.sql(f"SELECT turn FROM {COUNTER} WHERE {where_key}" + (" FOR UPDATE" if pg else ""))
        self.decrement = d.sql(f"UPDATE {COUNTER} SET held = held - 1 WHERE {where_key} AND held > 0")
        self.set_turn = d.sql(f"UPDATE {COUNTER} SET turn = ? WHERE {where_key}")
        self.slot_head = f"INSERT INTO {SLOT} (run_id, pipeline, rule, key, acquired_at) VALUES "
        self.slot_row = "(?, ?, ?, ?, ?)"
        self.insert_slot = d.sql(self.slot_head + self.slot_row)
        self.release_slots = d.sql(f"DELETE FROM {SLOT} WHERE run_id = ? RETURNING rule, key")
        self.holders = d.sql(f"SELECT run_id FROM {SLOT} WHERE {where_key}")
        self.holds = d.sql(f"SELECT 1 FROM {SLOT} WHERE run_id = ? AND rule = ?")
        self.slots_of = d.sql(f"SELECT rule, key FROM {SLOT} WHERE run_id = ?")
        self.release_slot = d.sql(f"DELETE FROM {SLOT} WHERE run_id = ? AND rule = ? RETURNING key")
        self.running_stages = d.sql("SELECT stage FROM pipeline_stagerun WHERE run_id = ? AND status = 'running'")
        self.transfer = d.sql(f"UPDATE {SLOT} SET run_id = ?, acquired_at = ? WHERE run_id = ? AND rule = ?")
        self.insert_waiter = d.sql(
            f"INSERT INTO {WAITER} (run_id, pipeline, rule, key, event_id, trace_id, since) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self.pop = d.sql(
            f"DELETE FROM {WAITER} WHERE id = (SELECT id FROM {WAITER} WHERE {where_key} ORDER BY id LIMIT 1) "
            "RETURNING run_id, event_id, trace_id"
        )
        self.waiter_of = d.sql(f"SELECT rule, key FROM {WAITER} WHERE run_id = ?")
        self.leave = d.sql(f"DELETE FROM {WAITER} WHERE run_id = ? AND rule = ?")
        self.waiting_keys = d.sql(f"SELECT key FROM {WAITER} WHERE pipeline = ? AND rule = ? GROUP BY key")
        self.run_row = "(?, ?, ?, ?, ?, ?, NULL, ?, NULL, ?, NULL, '')"
        admitted_from = _in([s for s in states.sources_of(RunStatus.PENDING) if s == RunStatus.WAITING])
        self.admit_run = d.sql(
            "UPDATE pipeline_run SET status = CASE WHEN started_at IS NULL THEN 'pending' ELSE 'running' END "
            f"WHERE id = ? AND status IN {admitted_from}"
        )
        self.ready_stages = d.sql(
            "UPDATE pipeline_stagerun SET enqueued_at = ? WHERE run_id = ? AND status = 'pending' "
            "AND parents_remaining = 0 RETURNING stage"
        )
        # A stage over its own limit waits (from the states a claim takes), and is admitted again.
        to_waiting = _in(states.sources_of("waiting", states.STAGE_TRANSITIONS))
        self.stage_to_waiting = d.sql(
            f"UPDATE pipeline_stagerun SET status = 'waiting' WHERE run_id = ? AND stage = ? AND status IN {to_waiting} "
            "AND parents_remaining = 0 AND EXISTS (SELECT 1 FROM pipeline_run WHERE id = ? AND status IN ('pending', 'running'))"
        )
        self.admit_stage = d.sql(
            "UPDATE pipeline_stagerun SET status = 'pending', enqueued_at = ? WHERE run_id = ? AND stage = ? "
            "AND status = 'waiting'"
        )
        cancellable = _in([s for s in states.sources_of(RunStatus.CANCELLED) if s != RunStatus.WAITING])
        self.cancel_run = d.sql(
            f"UPDATE pipeline_run SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN {cancellable}"
        )
        stage_cancellable = _in(states.sources_of("cancelled", states.STAGE_TRANSITIONS))
        self.cancel_stages = d.sql(
            f"UPDATE pipeline_stagerun SET status = 'cancelled', finished_at = ? WHERE run_id = ? "
            f"AND status IN {stage_cancellable} AND status != 'running'"
        )


@lru_cache(maxsize=None)
def statements_for(vendor: str) -> FlowStatements:
    return FlowStatements(dialect_for(vendor))
