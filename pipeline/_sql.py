"""The run store's SQL on the raw DB-API connection, one dialect per backend.

The message path runs a handful of statements per stage; building them with the ORM cost more
CPU than executing them (issue 19: 5.5 ms of SQL compilation per run against 1.6 ms in the
driver). So the statements are written once, here, with each backend's placeholder, and values
are converted the way Django's fields store them (SQLite: UUIDs as 32 hex characters, datetimes
as naive UTC text, JSON as text; PostgreSQL: native uuid, timestamptz and jsonb), so rows written
here and rows written by the ORM are the same rows."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import orjson

from ._statuses import ADMITTED_RUN_STATUSES, CLAIMABLE_STAGE_STATUSES, sql_list

_UTC = timezone.utc


class Dialect:
    """Placeholders, value conversion and the few statements whose text differs by backend."""

    vendor = "sqlite"
    begin = "BEGIN IMMEDIATE"

    def sql(self, text: str) -> str:
        """Statements are written with `?`; PostgreSQL wants `%s`."""
        return text

    def uuid(self, value: Any) -> Any:
        return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).hex

    def dt(self, value: datetime | None) -> Any:
        if value is None:
            return None
        return str(value.astimezone(_UTC).replace(tzinfo=None)) if value.tzinfo else str(value)

    def json(self, value: Any) -> Any:
        return None if value is None else orjson.dumps(value).decode()

    def load_json(self, value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, (str, bytes)) else value

    def load_uuid(self, value: Any) -> str:
        """A UUID read back from the store, as text with dashes (how ids travel and are logged)."""
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))

    def load_dt(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value if value is None or value.tzinfo else value.replace(tzinfo=_UTC)
        return datetime.fromisoformat(value).replace(tzinfo=_UTC)

    def json_param(self) -> str:
        return "?"

    def prepare(self, connection: Any) -> Any:
        """A cursor for the statements below."""
        return connection.cursor()


class PostgresDialect(Dialect):
    vendor = "postgresql"
    begin = "BEGIN"

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def uuid(self, value: Any) -> Any:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))

    def dt(self, value: datetime | None) -> Any:
        return value

    def json_param(self) -> str:
        return "?::jsonb"

    def prepare(self, connection: Any) -> Any:
        # Server-side binding: psycopg prepares a statement on the server once it has run
        # `prepare_threshold` times on this connection (0: at once), so each later execution
        # only sends the parameters.
        import psycopg  # here: an optional dependency (the `postgres` extra), used only on PostgreSQL

        connection.prepare_threshold = 0
        return psycopg.Cursor(connection)


@lru_cache(maxsize=None)
def dialect_for(vendor: str) -> Dialect:
    if vendor == "sqlite":
        return Dialect()
    if vendor == "postgresql":
        return PostgresDialect()
    raise NotImplementedError(f"the run store supports SQLite and PostgreSQL, not {vendor!r}")


def now() -> datetime:
    return datetime.now(_UTC)


class Statements:
    """The text of every statement of the message path, for one dialect (compiled once).

    Written with `?` (converted for PostgreSQL by `Dialect.sql`); the fused PostgreSQL forms at
    the end are made of the same pieces, so a statement is written in one place only."""

    def __init__(self, d: Dialect) -> None:
        j = d.json_param()
        pg = d.vendor == "postgresql"
        active, waiting = sql_list(ADMITTED_RUN_STATUSES), sql_list(CLAIMABLE_STAGE_STATUSES)
        run_active = f"EXISTS (SELECT 1 FROM pipeline_run WHERE id = ? AND status IN {active})"
        self._columns = columns = (
            "run_id, stage, status, attempts, enqueued_at, started_at, message_id, lease_until, worker, "
            "parents_remaining, result, error, traceback, attempt_log"
        )
        # (PostgreSQL types a SELECT list's parameters as text unless told.)
        uuid_, ts = ("?::uuid", "?::timestamptz") if pg else ("?", "?")

        claim = (
            "UPDATE pipeline_stagerun SET status = 'running', attempts = attempts + 1, message_id = ?, "
            "lease_until = ?, started_at = ?, worker = ?, next_attempt_at = NULL "
            "WHERE run_id = ? AND stage = ? AND parents_remaining = 0 "
            f"AND (status IN {waiting} OR (status = 'running' AND ((message_id = ? AND worker = ?) OR lease_until < ?))) "
            f"AND {run_active} RETURNING attempts"
        )
        start_run = "UPDATE pipeline_run SET status = 'running', started_at = ? WHERE id = ? AND status = 'pending'"
        succeed = (
            f"UPDATE pipeline_stagerun SET status = 'succeeded', result = {j}, finished_at = ?, duration_ms = ?, "
            "lease_until = NULL, error = '', traceback = '' "
            "WHERE run_id = ? AND stage = ? AND status = 'running' AND message_id = ? AND attempts = ?"
        )
        # A child made ready, unless its run stopped meanwhile (a cancelled run gets no new stage);
        # `{guard}` lets the fused form add "and only if the parent's success was recorded".
        insert_ready = (
            f"INSERT INTO pipeline_stagerun ({columns}) "
            f"SELECT {uuid_}, ?, 'pending', 0, {ts}, NULL, '', NULL, '', 0, NULL, '', '', '[]' "
            f"WHERE {{guard}}{run_active} ON CONFLICT (run_id, stage) DO NOTHING"
        )
        # A linear child continued in the same worker: created already claimed by the message that
        # carries its parent, unless the run stopped meanwhile (then it is not created at all).
        insert_claimed = (
            f"INSERT INTO pipeline_stagerun ({columns}) "
            f"SELECT {uuid_}, ?, 'running', 1, {ts}, {ts}, ?, {ts}, ?, 0, NULL, '', '', '[]' "
            f"WHERE {{guard}}{run_active} ON CONFLICT (run_id, stage) DO NOTHING"
        )
        end_run = (
            "UPDATE pipeline_run SET status = ?, finished_at = ?, duration_ms = ?, error = ? "
            f"WHERE id = ? AND status IN {active}{{guard}}"
        )

        self.claim = d.sql(claim)
        self.start_run = d.sql(start_run)
        self.run_times = d.sql("SELECT started_at, created_at FROM pipeline_run WHERE id = ?")
        self.event_fields = d.sql(
            "SELECT e.id, e.type, e.payload, e.occurred_at, e.trace_id "
            "FROM pipeline_run r JOIN pipeline_event e ON e.id = r.event_id WHERE r.id = ?"
        )
        self.succeed = d.sql(succeed)
        self.insert_ready = d.sql(insert_ready.format(guard=""))
        self.insert_claimed = d.sql(insert_claimed.format(guard=""))
        # A fan-in counts its parents down: the first parent to finish creates the row with the
        # others still to come, each later one decrements it, and the one reaching zero makes it
        # ready. The row lock of the upsert orders racing parents, on every backend.
        self.count_down = d.sql(
            f"INSERT INTO pipeline_stagerun ({columns}) "
            "VALUES (?, ?, 'pending', 0, ?, NULL, '', NULL, '', ?, NULL, '', '', '[]') "
            "ON CONFLICT (run_id, stage) DO UPDATE SET "
            "parents_remaining = pipeline_stagerun.parents_remaining - 1, "
            "enqueued_at = CASE WHEN pipeline_stagerun.parents_remaining = 1 THEN ? ELSE NULL END "
            "WHERE pipeline_stagerun.parents_remaining > 0 "
            "RETURNING parents_remaining"
        )
        self.parent_results = d.sql("SELECT stage, result FROM pipeline_stagerun WHERE run_id = ? AND stage IN ({})")
        self.end_run = d.sql(end_run.format(guard=""))
        self.lock_run = d.sql("SELECT status FROM pipeline_run WHERE id = ?" + (" FOR UPDATE" if pg else ""))
        self.sinks_succeeded = d.sql(
            "SELECT count(*) FROM pipeline_stagerun WHERE run_id = ? AND status = 'succeeded' AND stage IN ({})"
        )
        self.attempt_log = d.sql("SELECT attempt_log FROM pipeline_stagerun WHERE run_id = ? AND stage = ?")
        # What an outcome written once already left behind (`pipeline._stage_store`, an ambiguous commit).
        self.outcome_of = d.sql(
            "SELECT status, message_id, attempts, finished_at FROM pipeline_stagerun WHERE run_id = ? AND stage = ?"
        )
        self.children_states = d.sql(
            "SELECT stage, status, message_id, parents_remaining FROM pipeline_stagerun WHERE run_id = ? AND stage IN ({})"
        )
        self.run_end = d.sql("SELECT status, finished_at, duration_ms FROM pipeline_run WHERE id = ?")
        self.stage_failed = d.sql(
            f"UPDATE pipeline_stagerun SET status = ?, error = ?, traceback = ?, attempt_log = {j}, finished_at = ?, "
            "duration_ms = ?, lease_until = NULL, next_attempt_at = ? "
            "WHERE run_id = ? AND stage = ? AND status = 'running' AND message_id = ? AND attempts = ?"
        )
        insert_event = (
            "INSERT INTO pipeline_event (id, type, version, payload, occurred_at, trace_id, idempotency_key, source, "
            "published_at, publish_attempts, linked_trace_id, trace_flags, tracestate, priority) "
            f"VALUES (?, ?, 1, {j}, ?, ?, ?, ?, NULL, 0, ?, ?, ?, ?)"
        )
        run_columns = ("id, event_id, event_type, pipeline, status, trigger, replay_of_id, created_at, "
                       "started_at, finished_at, duration_ms, error")
        # What emit writes and publishing marks, for `Tx.insert_later`/`update_later` (several rows
        # in one statement): written with `?`, converted when run.
        self.event_head = insert_event.split("VALUES ")[0] + "VALUES "
        self.event_row = "(" + insert_event.split("VALUES (")[1]
        self.run_head = f"INSERT INTO pipeline_run ({run_columns}) VALUES "
        self.run_row = "(?, ?, ?, ?, 'pending', ?, NULL, ?, NULL, NULL, NULL, '')"
        self.root_head = f"INSERT INTO pipeline_stagerun ({columns}) VALUES "
        self.root_row = "(?, ?, 'pending', 0, ?, NULL, '', NULL, '', 0, NULL, '', '', '[]')"
        self.mark_published_in = (
            "UPDATE pipeline_event SET published_at = ?, publish_attempts = publish_attempts + 1 WHERE id IN ({})"
        )

        # PostgreSQL runs data-modifying statements inside WITH: the commonest pairs of the message
        # path then take one round trip instead of two (SQLite has no such CTEs, and its
        # statements cost no round trip anyway). Each later part runs only if the first one did.
        # Parameters: those of the first statement, then those of the second.
        self.fused = pg
        if pg:
            after_s = "EXISTS (SELECT 1 FROM s) AND "
            both = "SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM c)"
            self.succeed_then_claim = d.sql(
                f"WITH s AS ({succeed} RETURNING 1), c AS ({insert_claimed.format(guard=after_s)} RETURNING 1) {both}"
            )
            self.succeed_then_ready = d.sql(
                f"WITH s AS ({succeed} RETURNING 1), c AS ({insert_ready.format(guard=after_s)} RETURNING 1) {both}"
            )
            self.succeed_then_end = d.sql(
                f"WITH s AS ({succeed} RETURNING 1), "
                f"c AS ({end_run.format(guard=' AND EXISTS (SELECT 1 FROM s)')} RETURNING 1) {both}"
            )
            self.claim_then_start = d.sql(
                f"WITH c AS ({claim}), r AS ({start_run} AND EXISTS (SELECT 1 FROM c) RETURNING 1) "
                "SELECT (SELECT attempts FROM c), (SELECT count(*) FROM r)"
            )

    def in_list(self, template: str, n: int, d: Dialect) -> str:
        marks = ", ".join(["%s" if d.vendor == "postgresql" else "?"] * n)
        return template.format(marks)


@lru_cache(maxsize=None)
def statements_for(vendor: str) -> Statements:
    return Statements(dialect_for(vendor))
