"""Group commit: one writer per worker process executes what every stage thread hands it, in one
transaction per batch.

Why: a commit is the expensive part of durability (a WAL sync on SQLite, a round trip and a
flush on PostgreSQL), and with 8 threads per process all taking SQLite's single write lock,
threads mostly waited on each other. Here a thread hands over an operation (a function of a
`Tx`) and waits; the writer takes everything queued, runs it in one transaction, commits, and
only then wakes each thread with its result, so nothing a thread goes on to do (log, publish,
let Dramatiq ack its message) happens before its write is durable. A batch is as large as what
arrived during the previous commit: no timer, so an idle system waits for nothing.

If a batch fails, its operations are run again one by one, each in its own transaction, so one
bad operation fails alone. Code already inside a Django transaction (emit in a view's atomic
block, tests) runs its operations on that connection instead (`run_direct`)."""
from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from typing import Any, Callable

from django.db import connections, router, transaction

from . import store_health
from .sql import Dialect, Statements, dialect_for, statements_for

MAX_BATCH = 256
IDLE_CLOSE_SECONDS = 5.0
SQLITE_LOCK_WAIT_SECONDS = 30.0
CHECKPOINT_INTERVAL_SECONDS = 0.2

# Counted for the hot-path tool (tests/bench/hotpath.py): statements and commits of the run store.
counters = {"statements": 0, "commits": 0, "batches": 0}


DEFERRED_ROWS_PER_STATEMENT = 200


class Tx:
    """What an operation sees: `execute` on the batch's cursor, the backend's statements, and
    `insert_later`/`update_later` for writes whose outcome the operation does not need to read."""

    __slots__ = ("cursor", "d", "q", "_inserts", "_updates")

    def __init__(self, cursor: Any, dialect: Dialect, statements: Statements) -> None:
        self.cursor = cursor
        self.d = dialect
        self.q = statements
        self._inserts: dict[tuple[str, str], list[tuple]] = {}
        self._updates: dict[str, tuple[tuple, list[Any]]] = {}

    def execute(self, sql: str, params: Any = ()) -> Any:
        counters["statements"] += 1
        return self.cursor.execute(sql, params)

    def executemany(self, sql: str, rows: list) -> Any:
        counters["statements"] += 1
        self.cursor.executemany(sql, rows)  # psycopg returns None, sqlite3 the cursor
        return self.cursor

    def insert_later(self, head: str, row_marks: str, row: tuple) -> None:
        """An INSERT run once for the whole batch, as one multi-row statement per table, just
        before the commit: `head` is "INSERT INTO t (cols) VALUES ", `row_marks` "(?, ?, ...)".
        Why: each statement lets go of the GIL and must get it back while the database's write
        lock is held (other processes wait meanwhile); ten emits in a batch cost one statement.
        Tables are written in the order first asked (events before their runs). A failing row
        fails the batch, whose operations are then run one by one: the error reaches its own."""
        self._inserts.setdefault((head, row_marks), []).append(row)

    def update_later(self, template: str, params: tuple, key: Any) -> None:
        """`template` with `{}` for an IN list of keys, run once for the batch with the `params`
        of the first caller (e.g. one timestamp for every event marked published)."""
        pending = self._updates.get(template)
        if pending is None:
            self._updates[template] = (params, [key])
        else:
            pending[1].append(key)

    def flush(self) -> None:
        """Runs the deferred writes (called before the commit)."""
        inserts, self._inserts = self._inserts, {}
        if self.d.vendor == "postgresql" and len(inserts) > 1 and all(
                len(rows) <= DEFERRED_ROWS_PER_STATEMENT for rows in inserts.values()):
            # One round trip: every INSERT in one statement (WITH i0 AS (INSERT ...), ... INSERT ...);
            # the foreign keys between them are checked at commit (Django makes them deferrable).
            parts = [head + ", ".join([marks] * len(rows)) for (head, marks), rows in inserts.items()]
            text = "WITH " + ", ".join(f"i{n} AS ({part})" for n, part in enumerate(parts[:-1])) + " " + parts[-1]
            self.execute(_sql(self.d, text), [value for rows in inserts.values() for row in rows for value in row])
            inserts = {}
        for (head, marks), rows in inserts.items():
            for i in range(0, len(rows), DEFERRED_ROWS_PER_STATEMENT):
                chunk = rows[i:i + DEFERRED_ROWS_PER_STATEMENT]
                self.execute(_sql(self.d, head + ", ".join([marks] * len(chunk))),
                             [value for row in chunk for value in row])
        updates, self._updates = self._updates, {}
        for template, (params, keys) in updates.items():
            for i in range(0, len(keys), DEFERRED_ROWS_PER_STATEMENT):
                chunk = keys[i:i + DEFERRED_ROWS_PER_STATEMENT]
                self.execute(_sql(self.d, template.format(", ".join(["?"] * len(chunk)))), (*params, *chunk))

    def discard(self) -> None:
        self._inserts, self._updates = {}, {}


_SQL_TEXTS: dict[tuple[str, str], str] = {}


def _sql(d: Dialect, text: str) -> str:
    """A deferred statement's text in the backend's placeholders (a few distinct sizes recur)."""
    key = (d.vendor, text)
    converted = _SQL_TEXTS.get(key)
    if converted is None:
        if len(_SQL_TEXTS) > 4096:
            _SQL_TEXTS.clear()
        converted = _SQL_TEXTS[key] = d.sql(text)
    return converted


Operation = Callable[[Tx], Any]

class _Pending:
    """An operation handed over, and the lock its thread waits on (held until the writer is done
    with it: the cheapest hand-over CPython has, cheaper than an Event's condition variable)."""

    __slots__ = ("op", "done", "result", "error")

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None


def _close_marker(tx: Tx) -> None:  # queued by close(): the writer closes its connection
    return None


class GroupCommitWriter:
    """One thread and one connection of its own; see the module's docstring."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._wrapper: Any = None
        self._tx: Tx | None = None
        self._checkpointer: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._lock_path = _lock_path(connections.settings[alias])
        self._thread = threading.Thread(target=self._loop, name="pipeline-group-commit", daemon=True)
        self._thread.start()

    def run(self, op: Operation) -> Any:
        """Runs `op` in the next batch; returns its result once the batch has committed."""
        pending = _Pending(op)
        self._queue.put(pending)
        pending.done.acquire()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        """Closes the writer's connection once what is queued before has run."""
        closing = _Pending(_close_marker)
        self._queue.put(closing)
        closing.done.acquire(timeout=10)

    def submit(self, op: Operation) -> None:
        """Runs `op` in a coming batch without waiting (bookkeeping that may be lost in a crash,
        such as marking an event published: the relay then publishes it again, harmlessly)."""
        self._queue.put(_Pending(op))

    # --- the writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_CLOSE_SECONDS if self._tx is not None else None)
            except queue.Empty:
                # Idle: give the connection back (a test database can then be dropped, a
                # PostgreSQL server counts one connection fewer); the next batch reconnects.
                self._disconnect()
                continue
            # The batch is gathered once the cross-process lock is ours (SQLite), so everything
            # handed over while other processes held it goes into this one transaction.
            self._lock()
            closing: list[_Pending] = []
            done: list[_Pending] = []
            try:
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                closing = [p for p in batch if p.op is _close_marker]
                if closing:
                    batch = [p for p in batch if p.op is not _close_marker]
                if batch:
                    done = self._execute(batch)
            finally:
                self._unlock()
            # Woken only now: a woken thread competes for the GIL, and the lock other processes
            # queue on must not wait for this thread to get it back.
            for pending in done:
                pending.done.release()
            for pending in closing:
                self._disconnect()
                pending.done.release()

    def _connect(self) -> Tx:
        if self._tx is None:
            wrapper = connections.create_connection(self.alias)
            wrapper.ensure_connection()
            dialect = dialect_for(wrapper.vendor)
            if wrapper.vendor == "sqlite":
                wrapper.connection.execute("PRAGMA busy_timeout = 0")  # see _begin
                # Most of the WAL checkpointing moves out of the commit path (see _checkpoints).
                self._start_checkpoints()
            self._wrapper = wrapper
            self._tx = Tx(dialect.prepare(wrapper.connection), dialect, statements_for(wrapper.vendor))
        return self._tx

    def _start_checkpoints(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="pipeline-wal-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    def _checkpoints(self) -> None:
        """Copies the SQLite write-ahead log back into the database every 200 ms, on a
        connection of its own. Left to SQLite alone, the commit that crosses 1,000 WAL pages
        copies them and syncs the file while every thread of its batch waits; a PASSIVE
        checkpoint takes no write lock, so batches go on meanwhile, and the automatic one then
        finds the pages already copied (measured: 238 -> 316-351 runs/s, 2x8 workers)."""
        import sqlite3

        path = connections[self.alias].settings_dict["NAME"]
        conn = None
        seen = -1
        while True:
            time.sleep(CHECKPOINT_INTERVAL_SECONDS)
            if counters["batches"] == seen:
                continue  # nothing written since the last checkpoint
            seen = counters["batches"]
            try:
                if conn is None:
                    conn = sqlite3.connect(str(path), timeout=0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except Exception:  # busy, or the file went away (a test database): try again later
                if conn is not None:
                    conn.close()
                conn = None

    def _disconnect(self) -> None:
        wrapper, self._wrapper, self._tx = self._wrapper, None, None
        if wrapper is not None:
            try:
                wrapper.close()
            except Exception:
                pass

    def _execute(self, batch: list[_Pending]) -> list[_Pending]:
        """Runs a batch; returns its operations, their results set, for the caller to wake."""
        try:
            results = self._transaction([p.op for p in batch])
        except BaseException:
            self._one_by_one(batch)
            return []
        for pending, result in zip(batch, results):
            pending.result = result
        return batch

    def _one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            try:
                (pending.result,) = self._transaction([pending.op])
            except BaseException as exc:  # handed to the waiting thread, which raises it
                pending.error = store_health.as_store_unavailable(exc)  # logged once per outage
            pending.done.release()

    def _begin(self, tx: Tx) -> None:
        """BEGIN. On SQLite the writer already holds the lock file (`_lock`), so the write lock
        is normally free; another connection (the ORM's) may still hold it for a moment, so it is
        retried in steps of at most 0.5 ms rather than left to SQLite's busy handler."""
        if tx.d.vendor != "sqlite":
            tx.cursor.execute(tx.d.begin)
            return
        delay, deadline = 0.00005, time.monotonic() + SQLITE_LOCK_WAIT_SECONDS
        while True:
            try:
                tx.cursor.execute(tx.d.begin)
                return
            except Exception as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.0005)

    def _lock(self) -> None:
        """SQLite: the writers of all processes queue on an flock(2) of a lock file beside the
        database, and the kernel wakes the next one the moment it is free. SQLite's own busy
        handler sleeps 5, 10, 25... 100 ms between tries, far longer than a batch holds the lock:
        with two worker processes and a producer, that sleeping was most of the time a run took."""
        try:
            if self._lock_fd is None and self._lock_path is not None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError:  # no lock file (its folder went away): SQLite's own lock still holds
            self._lock_fd = None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError:
                self._lock_fd = None

    def _transaction(self, ops: list[Operation]) -> list[Any]:
        try:
            tx = self._connect()
            self._begin(tx)
        except BaseException:
            self._disconnect()  # the database went away: reconnect for the next batch
            raise
        try:
            results = [op(tx) for op in ops]
            tx.flush()
            tx.cursor.execute("COMMIT")
        except BaseException:
            tx.discard()
            try:
                tx.cursor.execute("ROLLBACK")
            except BaseException:
                self._disconnect()
            raise
        counters["commits"] += 1
        counters["batches"] += 1
        store_health.outage.succeeded()  # says `store.recovered` once after an outage
        return results


_writer: GroupCommitWriter | None = None
_writer_pid = 0
_writer_lock = threading.Lock()


def _group_commit_enabled() -> bool:
    from . import conf

    return bool(conf.get("PIPELINE_GROUP_COMMIT"))


def writer() -> GroupCommitWriter:
    """This process's writer (a forked worker process starts its own)."""
    global _writer, _writer_pid
    if _writer is None or _writer_pid != os.getpid():
        with _writer_lock:
            if _writer is None or _writer_pid != os.getpid():
                _writer = GroupCommitWriter(_alias())
                _writer_pid = os.getpid()
    return _writer


def close() -> None:
    """Closes this process's writer connection, if any (tests, before their database is dropped)."""
    if _writer is not None and _writer_pid == os.getpid():
        _writer.close()


def _lock_path(settings_dict: dict) -> str | None:
    if "sqlite" not in settings_dict.get("ENGINE", ""):
        return None
    name = str(settings_dict.get("NAME") or "")
    if not name or ":memory:" in name or name.startswith("file:"):
        return None
    return name + "-writer.lock"


_store_alias: str | None = None


def _alias() -> str:
    """The database the run store lives in (the router's answer does not change at run time)."""
    global _store_alias
    if _store_alias is None:
        _store_alias = router.db_for_write(_model())
    return _store_alias


def _model() -> Any:
    from .models import StageRun

    return StageRun


def run_direct(op: Operation) -> Any:
    """Runs `op` on this thread's Django connection, inside its current transaction if any."""
    connection = connections[_alias()]
    with transaction.atomic(using=connection.alias):
        raw = connection.connection
        dialect = dialect_for(connection.vendor)
        cursor = raw.cursor()
        try:
            tx = Tx(cursor, dialect, statements_for(connection.vendor))
            result = op(tx)
            tx.flush()
        finally:
            cursor.close()
    return result


def in_transaction() -> bool:
    """Whether this thread's Django connection is inside a transaction (then writes join it)."""
    return connections[_alias()].in_atomic_block


def run(op: Operation) -> Any:
    """Runs `op` durably: in the group-commit writer, or on the caller's connection when the
    caller is inside a transaction (its writes must commit or roll back with the caller's)."""
    connection = connections[_alias()]
    if connection.in_atomic_block or not _group_commit_enabled():
        return run_direct(op)
    return writer().run(op)


def submit(op: Operation) -> None:
    """Runs `op` later, in a batch, without waiting for it."""
    connection = connections[_alias()]
    if connection.in_atomic_block or not _group_commit_enabled():
        transaction.on_commit(lambda: run_direct(op), using=connection.alias)
        return
    writer().submit(op)
