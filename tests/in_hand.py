"""Tests only: how many messages a worker process holds, in a file the test process reads.

Why: a test's data is flushed when it ends, and a worker that shares the session with it must be
idle by then (tests/conftest.py, `shared_workers_idle`). The broker's AMQP answer counts only a
queue's ready messages, not those a worker holds (being processed, or a retry held until its
time); asking `rabbitmqctl` takes seconds on a busy machine, for every test. The worker itself
knows: a message is in hand from the moment it is delayed or processed until it is acked or
nacked (Dramatiq acks after processing, and after a `Retry` has re-published it).

Loaded only when `TEST_IN_HAND_DIR` is set (tests/settings.py), by the shared test workers."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware


class InHand(Middleware):
    """Writes `<TEST_IN_HAND_DIR>/<pid>`: the number of messages this process holds, on each change."""

    def __init__(self) -> None:
        self.directory = Path(os.environ["TEST_IN_HAND_DIR"])
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write()

    def _add(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._held.add(message.message_id)
            self._write()

    def _remove(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._held.discard(message.message_id)
            self._write()

    before_delay_message = _add
    before_process_message = _add
    after_ack = _remove
    after_nack = _remove

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        (self.directory / str(os.getpid())).unlink(missing_ok=True)

    def _write(self) -> None:
        path = self.directory / str(os.getpid())
        temporary = path.with_suffix(".tmp")
        temporary.write_text(str(len(self._held)))
        os.replace(temporary, path)  # a reader sees the old count or the new one, never half


def held(directory: Path) -> int | None:
    """Messages held by the live processes that write in `directory`; None before any wrote."""
    counts = []
    for path in directory.glob("[0-9]*"):
        if path.suffix:
            continue
        try:
            os.kill(int(path.name), 0)
            counts.append(int(path.read_text() or 0))
        except (ProcessLookupError, ValueError, FileNotFoundError):
            continue  # a process that is gone holds nothing (the broker gives its messages back)
    return sum(counts) if counts else None
