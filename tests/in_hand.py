"""Tests only: how many messages a worker process holds, in a file the test process reads.

Why: a test's data is flushed when it ends, and a worker that shares the session with it must be
idle by then (tests/conftest.py, `shared_workers_idle`). The broker's AMQP answer counts only a
queue's ready messages, not those a worker holds (being processed, or a retry held until its
time); asking `rabbitmqctl` takes seconds on a busy machine, for every test. The worker itself
knows: a message is in hand from the moment it is delayed or processed until it is acked or
nacked (Dramatiq acks after processing, and after a `Retry` has re-published it). One exception:
when its broker connection fails, Dramatiq drops the delayed messages it held, with no hook to
say so (the broker gives them back to the queue); a delayed message whose time is more than
`DROPPED_AFTER_SECONDS` past and that no thread took is counted as gone.

Loaded only when `TEST_IN_HAND_DIR` is set (tests/settings.py), by the shared test workers."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from dramatiq.middleware import Middleware

DROPPED_AFTER_SECONDS = 10.0


class InHand(Middleware):
    """Writes `<TEST_IN_HAND_DIR>/<pid>` on each change: the messages this process holds, as a JSON
    list with, for each, the time (epoch seconds) a delayed one is due, or null once processing."""

    def __init__(self) -> None:
        self.directory = Path(os.environ["TEST_IN_HAND_DIR"])
        self._lock = threading.Lock()
        self._held: dict[str, float | None] = {}

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._write()

    def before_delay_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._held[message.message_id] = (message.options.get("eta") or 0) / 1000
            self._write()

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._held[message.message_id] = None
            self._write()

    def _done(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._held.pop(message.message_id, None)
            self._write()

    after_ack = _done
    after_nack = _done

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        (self.directory / str(os.getpid())).unlink(missing_ok=True)

    def _write(self) -> None:
        path = self.directory / str(os.getpid())
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(list(self._held.values())))
        os.replace(temporary, path)  # a reader sees the old list or the new one, never half


def held(directory: Path) -> int | None:
    """Messages held by the live processes that write in `directory`; None before any wrote."""
    counts = []
    gone_before = time.time() - DROPPED_AFTER_SECONDS
    for path in directory.glob("[0-9]*"):
        if path.suffix:
            continue
        try:
            os.kill(int(path.name), 0)
            due = json.loads(path.read_text() or "[]")
        except (ProcessLookupError, ValueError, FileNotFoundError):
            continue  # a process that is gone holds nothing (the broker gives its messages back)
        counts.append(len([d for d in due if d is None or d > gone_before]))
    return sum(counts) if counts else None
