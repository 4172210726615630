"""Worker heartbeats: each worker process says every few seconds that it is alive, what it
consumes and what it is running, so the dashboard can list workers and tell the silent ones."""
from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone
from dramatiq.middleware import Middleware

from .. import conf
from .._inflight import stage_running
from ..logging import get_logger
from .._store_health import outage

log = get_logger("pipeline.heartbeat")

# Rows of workers silent for this long are deleted at the next worker start.
FORGET_AFTER = timedelta(days=7)


class Heartbeat(Middleware):
    """Writes this process's `WorkerHeartbeat` row from a background thread every
    `PIPELINE_HEARTBEAT_SECONDS` (5 s): host, pid, queues, the stages in flight, started at, last
    seen. On a clean shutdown the row is marked stopped; a killed worker simply goes silent."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval
        self.worker_id = uuid.uuid4()
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}  # message id -> actor name
        self._processed = 0
        self._queues: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: Any = None

    # --- what the worker is doing -------------------------------------------------------------
    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._in_flight[message.message_id] = message.actor_name

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        with self._lock:
            if self._in_flight.pop(message.message_id, None) is not None:
                self._processed += 1

    def after_skip_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._in_flight.pop(message.message_id, None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            current = sorted(stage_running(mid, actor) for mid, actor in self._in_flight.items())
            return {"in_flight": len(current), "current": current[:50], "processed": self._processed}

    # --- the worker's life --------------------------------------------------------------------
    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        whitelist = getattr(worker, "consumer_whitelist", None)
        queues = whitelist or broker.get_declared_queues()
        self._queues = sorted(q for q in queues if not q.endswith((".DQ", ".XQ")))
        self.worker_id = uuid.uuid4()  # here, not in __init__: a forked child must not reuse its parent's
        self._started_at = timezone.now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pipeline-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._write(stopped_at=timezone.now())

    def _loop(self) -> None:
        interval = self.interval or float(conf.get("PIPELINE_HEARTBEAT_SECONDS"))
        self._forget_old()
        while not self._stop.is_set():
            self._write()
            self._stop.wait(interval)

    def _write(self, stopped_at: Any = None) -> None:
        # Here, not at the top (Django's app loading): django-dramatiq builds the middleware while
        # Django imports the apps, before any model may be imported.
        from ..models import WorkerHeartbeat

        if self._started_at is None:
            return
        try:
            WorkerHeartbeat.objects.update_or_create(
                id=self.worker_id,
                defaults={
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "queues": self._queues,
                    "started_at": self._started_at,
                    "last_seen": timezone.now(),
                    "stopped_at": stopped_at,
                    **(self.snapshot() if stopped_at is None else {"in_flight": 0, "current": []}),
                },
            )
        except Exception as exc:  # the database is down or locked: try again next beat

            if not outage.noticed(exc):  # an unreachable store is said once, as `store.unavailable`
                log.warning("worker.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            outage.succeeded()  # `store.recovered`, if this beat is the first write after an outage
        finally:
            connection.close()  # this thread's own connection: never left to go stale

    def _forget_old(self) -> None:
        from ..models import WorkerHeartbeat  # here: Django's app loading (see `_write`)

        try:
            WorkerHeartbeat.objects.filter(last_seen__lt=timezone.now() - FORGET_AFTER).delete()
        except Exception:
            pass
        finally:
            connection.close()
