"""Graceful drain on SIGTERM, said in the logs.

Dramatiq already drains: on SIGTERM the master forwards the signal to each worker process, which
stops taking messages, waits up to `--worker-shutdown-timeout` (the grace period) for the stages
in flight, hands the messages it had prefetched or was holding for a delayed retry back to
RabbitMQ, and closes its connection, so any stage still running after the grace period is
redelivered by the broker (and re-claimed, see `pipeline._states.claim_stage`). This middleware
writes what happened: `worker.draining` when the drain starts, `worker.drained` when it ends, with
the stages that finished and the ones handed back.

Send SIGTERM to the master process only (Kubernetes, Docker and `systemctl stop` with
`KillMode=mixed` do): a second SIGTERM to a worker process ends it at once."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

from dramatiq.middleware import Middleware

from .._inflight import stage_running
from ..logging import get_logger

log = get_logger("pipeline.drain")

DEFAULT_GRACE_MS = 600_000  # Dramatiq's default --worker-shutdown-timeout

_draining = threading.Event()


def draining() -> bool:
    """True once this worker process started draining: linear chains stop continuing inline
    and publish their next stage instead, so the drain does not wait for whole chains."""
    return _draining.is_set()


def grace_period_ms(argv: list[str] | None = None) -> int:
    """The `--worker-shutdown-timeout` the master was started with (worker processes are forked
    from it and keep its argv)."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        try:
            if arg == "--worker-shutdown-timeout":
                return int(argv[i + 1])
            if arg.startswith("--worker-shutdown-timeout="):
                return int(arg.split("=", 1)[1])
        except (IndexError, ValueError):
            break
    return DEFAULT_GRACE_MS


class Drain(Middleware):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[str, tuple[str, str | None]] = {}  # message id -> (actor, run id)
        self._draining_since: float | None = None
        self._at_start: set[str] = set()

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._in_flight[message.message_id] = (message.actor_name, message.options.get("run_id"))

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        with self._lock:
            self._in_flight.pop(message.message_id, None)

    after_skip_message = after_process_message

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        _draining.set()
        with self._lock:
            self._draining_since = time.monotonic()
            self._at_start = set(self._in_flight)
            running = sorted(stage_running(mid, actor) for mid, (actor, _run) in self._in_flight.items())
        prefetched = _qsize(getattr(worker, "work_queue", None))
        delayed = sum(_qsize(getattr(c, "delay_queue", None)) for c in getattr(worker, "consumers", {}).values())
        log.info(
            "worker.draining",
            in_flight=len(running),
            stages=running[:50],
            prefetched=prefetched,
            delayed=delayed,
            grace_seconds=grace_period_ms() / 1000,
        )

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        with self._lock:
            left = dict(self._in_flight)
            since = self._draining_since or time.monotonic()
            finished = len(self._at_start - set(left))
        fields = {
            "finished": finished,
            "abandoned": len(left),
            "duration_ms": round((time.monotonic() - since) * 1000, 3),
            "grace_seconds": grace_period_ms() / 1000,
        }
        if left:
            # Past the grace period: their messages were never acknowledged, so the broker hands
            # them to another worker once this connection closes, and the stage is claimed again.
            log.warning("worker.drained", **fields, returned_to_queue=[
                {"actor": stage_running(mid, actor), "run_id": run_id, "message_id": mid}
                for mid, (actor, run_id) in sorted(left.items())
            ][:50])
        else:
            log.info("worker.drained", **fields)


def _qsize(queue: Any) -> int:
    try:
        return int(queue.qsize()) if queue is not None else 0
    except Exception:
        return 0
