"""The in-process broker and worker behind `pipeline.testing`: Dramatiq's `StubBroker` and a
`dramatiq.Worker` in the test process, the stage actors moved onto it for as long as a test runs.

Why a real Dramatiq worker and not calling stage functions directly: the messages, the
middleware (logging context, time limits, retries, the current message) and the engine's
runtime are the production ones, so claiming, retries, fan-out/fan-in, cancel and replay behave
as they do under `rundramatiq`; only the transport is in memory.

Two differences from production, both on purpose:
- Delays are dropped: a retry's backoff (and any delayed message) is enqueued for now, so a test
  never waits for one (`stage.retrying` still says the backoff production would use).
- Inside a test transaction (Django's `TestCase`, pytest-django's `db`), the worker thread shares
  the test's database connection (as Django's `LiveServerTestCase` does for SQLite in memory), so
  the stages see what the test wrote and the test sees what the stages wrote, and everything is
  rolled back at the end of the test. `transaction.on_commit` callbacks registered meanwhile (the
  publish after an emit, log lines written once their transaction commits) are run by `drain()`
  as if the transaction had committed, the way `TestCase.captureOnCommitCallbacks(execute=True)`
  runs them. Outside a transaction (`TransactionTestCase`, `transactional_db`), the worker
  commits on connections of its own and the group-commit writer is used, as in production."""
from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from django.db import DEFAULT_DB_ALIAS, connections
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from ..flow._priority import declare_urgent_queue
from ..middleware import LoggingContext


class DrainTimeout(AssertionError):
    """Raised when the pipelines' messages are still not all processed after `drain`'s timeout."""


class _NoDelayStubBroker(StubBroker):
    """A StubBroker that enqueues a delayed message for now: tests never wait for a backoff."""

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:  # type: ignore[type-arg]
        return super().enqueue(message, delay=None)


class _SharedConnections(Middleware):
    """Gives each worker thread the test thread's connections (inside a test transaction)."""

    def __init__(self, shared: dict[str, Any]) -> None:
        self.shared = shared

    def after_worker_thread_boot(self, broker: Any, thread: Any) -> None:
        for alias, connection in self.shared.items():
            connections[alias] = connection


class _OwnConnections(Middleware):
    """Closes a worker thread's own connections when it stops (no connection outlives the test:
    PostgreSQL flushes and drops the test database only when nobody is connected to it)."""

    def before_worker_thread_shutdown(self, broker: Any, thread: Any) -> None:
        connections.close_all()


_time_limit: TimeLimit | None = None


def _shared_time_limit() -> TimeLimit:
    """One TimeLimit for every in-process broker of the test session: its timer thread is started
    once (what Dramatiq does at a worker process's boot), not once per test."""
    global _time_limit
    if _time_limit is None:
        _time_limit = TimeLimit(interval=100)
        _time_limit.after_process_boot(None)  # type: ignore[no-untyped-call]
    return _time_limit


class InProcessBroker:
    """A StubBroker carrying every declared actor, and one worker consuming all its queues."""

    def __init__(self, worker_threads: int = 1) -> None:
        self.shared = connections[DEFAULT_DB_ALIAS].in_atomic_block
        middleware: list[Middleware] = [
            LoggingContext(), AgeLimit(), _shared_time_limit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries(),
            CurrentMessage(),
        ]
        self.broker = _NoDelayStubBroker(middleware=middleware, fail_fast_default=False)
        if self.shared:
            shared = {alias: connections[alias] for alias in connections if connections[alias].in_atomic_block}
            for connection in shared.values():
                connection.inc_thread_sharing()
            self._shared_connections = shared
            self.broker.add_middleware(_SharedConnections(shared))
            worker_threads = 1  # one connection: one thread at a time may use it
        else:
            self._shared_connections = {}
            self.broker.add_middleware(_OwnConnections())
        self._previous = dramatiq.get_broker()
        self._moved: list[tuple[Any, Any]] = []
        for actor in list(self._previous.actors.values()):
            self.broker.declare_actor(actor)
            self._moved.append((actor, actor.broker))
            actor.broker = self.broker
            declare_urgent_queue(actor)  # an urgent event's messages go to the twin (pipeline.flow)
        dramatiq.set_broker(self.broker)
        self.worker = dramatiq.Worker(self.broker, worker_threads=worker_threads, worker_timeout=50)
        self.worker.start()
        self._pause()  # runs move on `drain()` only
        self._callbacks_from = {alias: len(c.run_on_commit) for alias, c in self._shared_connections.items()}

    def drain(self, timeout: float = 60.0) -> None:
        """Processes messages until none is left, nor any on-commit callback that would publish
        one. The worker runs only meanwhile: between drains it is paused, so a test decides when
        runs move (and, in a test transaction, never shares the connection with the worker)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._callbacks_pending():
                self._run_on_commit_callbacks()  # the worker is paused: this thread alone uses the connection
                continue
            if not self._unfinished():
                self._settle_group_commit()
                return
            self._resume()
            try:
                while self._unfinished():
                    for name in self._unfinished():
                        left_ms = int((deadline - time.monotonic()) * 1000)
                        if left_ms <= 0:
                            raise DrainTimeout(f"messages still waiting after {timeout}s on queue {name!r}")
                        try:
                            self.broker.join(name, timeout=left_ms, fail_fast=False)
                        except dramatiq.errors.QueueJoinTimeout:
                            raise DrainTimeout(f"messages still waiting after {timeout}s on queue {name!r}") from None
                    self.worker.join()
            finally:
                self._pause()

    def _settle_group_commit(self) -> None:
        """Outside a test transaction, waits for the group-commit writer to have committed what
        was handed to it without waiting (`writer.submit`: an event marked published): a test
        reads it, and nothing is left to write while the test's data is flushed."""
        # here: the writer imports the models, and pytest imports this package (its plugin) before Django is set up
        from .. import _writer as writer

        if self.shared or writer._writer is None or writer._writer_pid != os.getpid():
            return
        writer._writer.run(lambda tx: None)  # one batch after everything queued before it

    def _pause(self) -> None:
        """Pauses the worker threads (not the consumers: Dramatiq restarts a paused consumer
        seconds later; moving messages into the worker's memory touches no database)."""
        for thread in self.worker.workers:
            thread.pause()
        for thread in self.worker.workers:
            thread.paused_event.wait()

    def _resume(self) -> None:
        for thread in self.worker.workers:
            thread.resume()

    def _unfinished(self) -> list[str]:
        """The queues holding messages not yet processed (their delay queues folded in)."""
        return sorted({q_name(name) for name, q in self.broker.queues.items() if q.unfinished_tasks})

    def _callbacks_pending(self) -> bool:
        return any(len(c.run_on_commit) > self._callbacks_from[a] for a, c in self._shared_connections.items())

    def _run_on_commit_callbacks(self) -> bool:
        """Runs the on-commit callbacks registered in the test's transaction since the broker
        started, as if it had committed (and forgets them: they would never run otherwise)."""
        ran = False
        for alias, connection in self._shared_connections.items():
            start = self._callbacks_from[alias]
            while len(connection.run_on_commit) > start:
                pending = connection.run_on_commit[start:]
                del connection.run_on_commit[start:]
                for entry in pending:  # (savepoint ids, callback, robust) in Django 5
                    callback, robust = entry[1], len(entry) > 2 and entry[2]
                    ran = True
                    if robust:
                        try:
                            callback()
                        except Exception:  # Django logs and goes on for robust callbacks
                            pass
                    else:
                        callback()
        return ran

    def close(self) -> None:
        """Stops the worker and gives the actors their broker back."""
        try:
            self.worker.stop(timeout=30_000)
        finally:
            for actor, broker in self._moved:
                actor.broker = broker
            moved = {id(actor) for actor, _ in self._moved}
            for actor in self.broker.actors.values():  # declared during the test: back to the real broker
                if id(actor) not in moved:
                    actor.broker = self._previous
                    self._previous.declare_actor(actor)
            dramatiq.set_broker(self._previous)
            for connection in self._shared_connections.values():
                connection.dec_thread_sharing()
