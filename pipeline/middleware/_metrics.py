"""`WorkerMetrics`: one `/metrics` endpoint per `rundramatiq`, the sum of its worker processes."""
from __future__ import annotations

import os
from typing import Any

import prometheus_client.values
import structlog
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.multiprocess import MultiProcessCollector

from ..metrics import bind_address, prepare_worker_metrics_dir, start_http_server, worker_port


class WorkerMetrics(Middleware):
    """With PIPELINE_WORKER_METRICS_PORT set: puts each worker process in multiprocess mode, in its
    master's directory, and the first of them to bind the port serves the sum of them all (the
    others find the port taken and leave it be). Unset: nothing.

    Not a Dramatiq fork process: that process is forked from the master, which never sets Django
    up, and importing anything under `pipeline` needs Django's app registry."""

    def after_process_boot(self, broker: Any) -> None:
        port = worker_port()
        if port is None:
            return
        path = prepare_worker_metrics_dir(os.getppid())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        # prometheus_client chose its value class when it was imported, before this directory was
        # known: choose again, so the metrics (made on first use, from now on) write to it.
        prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(path))
        try:
            start_http_server(port, registry)
        except OSError:
            return  # a sibling process serves this port
        structlog.get_logger("pipeline.metrics").info("metrics.listening", port=port, address=bind_address(),
                                                      multiprocess_dir=str(path))

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())
