"""The scheduler's `/metrics` endpoint (schedule fires, and the system gauges), started by
`runscheduler` when PIPELINE_SCHEDULER_METRICS_PORT is set."""
from __future__ import annotations

import os
import threading
from typing import Any, Iterator

from prometheus_client import REGISTRY

from pipeline import SystemCollector, bind_address, get_logger, scheduler_port, start_http_server

_lock = threading.Lock()
_server_started_in: int | None = None  # pid of the process whose endpoint runs


class _SchedulerExposition:
    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()
        yield from SystemCollector(close_db=True).collect()


def start_scheduler_server() -> None:
    """Starts the scheduler's endpoint (once per process) when PIPELINE_SCHEDULER_METRICS_PORT
    is set; `runscheduler` calls it as it starts."""
    global _server_started_in
    port = scheduler_port()
    if port is None:
        return
    with _lock:
        if _server_started_in == os.getpid():
            return
        _server_started_in = os.getpid()
    try:
        start_http_server(port, _SchedulerExposition())  # type: ignore[arg-type]
    except OSError as exc:
        get_logger("pipeline.metrics").warning("metrics.endpoint_failed", port=port, error=str(exc))
        return
    get_logger("pipeline.metrics").info("metrics.listening", port=port, address=bind_address())
