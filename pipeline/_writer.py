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

import os
import queue
import threading
import time
from typing import Any

from django.db import connections, router, transaction

from . import conf, _store_health as store_health
from ._sql import dialect_for, statements_for
from ._sqlite_lock import CrossProcessLock
from ._handover import Pending, wake
from ._tx import Operation, Tx, counters
from ._wal_checkpoints import checkpoint_forever

MAX_BATCH = 256
IDLE_CLOSE_SECONDS = 5.0
SQLITE_LOCK_WAIT_SECONDS = 30.0


def _close_marker(tx: Tx) -> None:  # queued by close(): the writer closes its connection
    return None


class GroupCommitWriter:
    """One thread and one connection of its own; see the module's docstring."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._queue: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._wrapper: Any = None
        self._tx: Tx | None = None
        self._checkpointer: threading.Thread | None = None
        self._cross_process = CrossProcessLock.for_database(connections.settings[alias])
        self._thread = threading.Thread(target=self._loop, name="pipeline-group-commit", daemon=True)
        self._thread.start()

    def run(self, op: Operation) -> Any:
        """Runs `op` in the next batch; returns its result once the batch has committed."""
        pending = Pending(op)
        self._queue.put(pending)
        try:
            pending.done.acquire()
        finally:  # even if an exception is delivered to this thread now (a Dramatiq time limit)
            if pending.next is not None:
                pending.next.done.release()  # the baton: see pipeline._handover.wake
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        """Closes the writer's connection once what is queued before has run."""
        closing = Pending(_close_marker)
        self._queue.put(closing)
        closing.done.acquire(timeout=10)

    def submit(self, op: Operation) -> None:
        """Runs `op` in a coming batch without waiting (bookkeeping that may be lost in a crash,
        such as marking an event published: the relay then publishes it again, harmlessly)."""
        self._queue.put(Pending(op, waited=False))

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
            self._cross_process.acquire()
            closing: list[Pending] = []
            done: list[Pending] = []
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
                self._cross_process.release()
            # Woken only now: a woken thread competes for the GIL, and the lock other processes
            # queue on must not wait for this thread to get it back.
            wake(done)
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
                # Most of the WAL checkpointing moves out of the commit path (pipeline.wal_checkpoints).
                self._start_checkpoints()
            self._wrapper = wrapper
            self._tx = Tx(dialect.prepare(wrapper.connection), dialect, statements_for(wrapper.vendor))
        return self._tx

    def _start_checkpoints(self) -> None:
        if self._checkpointer is None:
            path = str(connections[self.alias].settings_dict["NAME"])
            self._checkpointer = threading.Thread(target=checkpoint_forever, args=(path, counters),
                                                  name="pipeline-wal-checkpoint", daemon=True)
            self._checkpointer.start()

    def _disconnect(self) -> None:
        wrapper, self._wrapper, self._tx = self._wrapper, None, None
        if wrapper is not None:
            try:
                wrapper.close()
            except Exception:
                pass

    def _execute(self, batch: list[Pending]) -> list[Pending]:
        """Runs a batch; returns its operations, their results set, for the caller to wake."""
        try:
            results = self._transaction([p.op for p in batch])
        except BaseException:
            self._one_by_one(batch)
            return []
        for pending, result in zip(batch, results):
            pending.result = result
        return batch

    def _one_by_one(self, batch: list[Pending]) -> None:
        for pending in batch:
            try:
                (pending.result,) = self._transaction([pending.op])
            except BaseException as exc:  # handed to the waiting thread, which raises it
                pending.error = store_health.as_store_unavailable(exc)  # logged once per outage
            pending.done.release()

    def _begin(self, tx: Tx) -> None:
        """BEGIN. On SQLite the writer already holds the lock file (`CrossProcessLock`), so the write lock
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


_store_alias: str | None = None


def _alias() -> str:
    """The database the run store lives in (the router's answer does not change at run time)."""
    global _store_alias
    if _store_alias is None:
        # The models need the app registry, and this module is imported before it is ready (by the
        # pytest plugin pipeline.testing, loaded as pytest starts): imported on first use.
        from .models import StageRun

        _store_alias = router.db_for_write(StageRun)
    return _store_alias


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
