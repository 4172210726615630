"""The run store's reachability as this process sees it, said once per outage.

Why: when PostgreSQL restarts, every stage thread and every emit fails at once. A traceback per
message buries the one fact an operator needs. Here the first failure that means "the database
cannot be reached" (refused, shutting down, starting up, connection lost) logs `store.unavailable`
with its error class, and the first commit after it logs `store.recovered` with how long it lasted:
one pair per outage per process. Failures that are not about reachability (a deadlock, a bad
statement, SQLite's lock) are none of this module's business.

What callers do meanwhile: the group-commit writer reconnects by itself (`pipeline._writer`); a
stage message whose claim could not be written goes back to the broker with a delay (a Dramatiq
`Retry`: not a failed attempt, not dead-lettered); an outcome already earned waits here for the
store (`when_back`) so the stage does not run twice; `emit` raises `StoreUnavailable` (503 in `web/`)."""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, TypeVar

from django.db import close_old_connections

from .errors import StoreUnavailable
from .logging import get_logger

log = get_logger("pipeline.store")

T = TypeVar("T")

# SQLSTATEs of a server that is going away or not there yet: 57P01 admin_shutdown, 57P02
# crash_shutdown, 57P03 cannot_connect_now ("the database system is starting up"); class 08 is
# "connection exception". psycopg reports a refused or lost connection with no SQLSTATE at all.
_SHUTDOWN_STATES = {"57P01", "57P02", "57P03"}
WAIT_FIRST_SECONDS = 0.1
WAIT_MAX_SECONDS = 2.0


def is_unreachable(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it wraps) says the database cannot be reached, as opposed to a
    statement failing on a database that answers.

    Only what `exc` wraps counts (`raise ... from`, `__cause__`; Django wraps every driver error
    so), not what was being handled when it was raised (`__context__`): a Dramatiq `Retry` raised
    while handling an outage's error is a decision about a message, taken once the store answered
    again; following the context would take it for a second outage (`store.unavailable` again)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, StoreUnavailable):
            return True
        if isinstance(exc, _psycopg_operational()):
            state = getattr(exc, "sqlstate", None)
            return state is None or state.startswith("08") or state in _SHUTDOWN_STATES
        exc = exc.__cause__
        seen += 1
    return False


def _psycopg_operational() -> tuple[type, ...]:
    try:
        import psycopg  # here: an optional dependency (the `postgres` extra), absent with SQLite
    except ImportError:  # SQLite only: nothing here is ever unreachable
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError)


class _Outage:
    """Up or down, and since when; thread-safe, one per process."""

    __slots__ = ("_lock", "down_since", "error_type")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.error_type = ""

    def noticed(self, exc: BaseException) -> bool:
        """Records a failure; True when it means the store is unreachable (logged the first time)."""
        if not is_unreachable(exc):
            return False
        with self._lock:
            if self.down_since is not None:
                return True
            self.down_since = time.monotonic()
            self.error_type = getattr(exc, "error_type", None) or type(exc).__name__
        log.warning("store.unavailable", error_type=self.error_type, error=_first_line(exc),
                    action="messages go back to the broker and outcomes wait; resumes by itself")
        return True

    def succeeded(self) -> None:
        """A commit went through: if the store was down, say it is back (once)."""
        if self.down_since is None:  # the common case, read without the lock
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            log.info("store.recovered", down_ms=round((time.monotonic() - since) * 1000, 1),
                     error_type=self.error_type)

    def forget(self) -> None:
        """Back to "up" without a word. Why: the outage is one per process, and a test process
        runs many tests; one that saw the store go down (and nothing of its own committed after)
        must not leave the next test an outage already said."""
        with self._lock:
            self.down_since = None
            self.error_type = ""


outage = _Outage()


def is_down() -> bool:
    return outage.down_since is not None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def retry_delay_ms(retries: int) -> int:
    """How long a message the store could not take waits before it comes back: 1, 2, 4, 8 s,
    then 10 s, with jitter so that a whole worker's messages do not return in one burst."""
    base = min(1000 * 2 ** min(retries, 4), 10_000)
    return int(base * random.uniform(0.75, 1.25))


def when_back(call: Callable[[], T], deadline: float | None = None) -> T:
    """Calls `call` until it stops failing for want of a store; other errors are raised. Why:
    an outcome the stage already earned is written once the store is back, instead of running
    the stage again. `deadline` (monotonic): give up then with `StoreUnavailable`."""
    pause = WAIT_FIRST_SECONDS
    while True:
        try:
            return call()
        except Exception as exc:
            if not outage.noticed(exc):
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreUnavailable(exc) from None
        close_old_connections()  # this thread's broken connection: a fresh one next time
        time.sleep(pause)  # short steps: a time limit or a shutdown can still interrupt it
        pause = min(pause * 2, WAIT_MAX_SECONDS)


def as_store_unavailable(exc: BaseException) -> Any:
    """`StoreUnavailable` for an unreachable store's error, else `exc` itself."""
    if isinstance(exc, StoreUnavailable) or not outage.noticed(exc):
        return exc
    error = StoreUnavailable(exc)
    error.__cause__ = None
    return error
