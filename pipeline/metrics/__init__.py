"""Prometheus metrics, without touching the engine's hot path.

Every run and stage transition is already one structured log line (`run.started`,
`stage.succeeded` with `duration_ms`, `schedule.fired` with `fire_delay_ms`, ...). `processor.observe` is a
structlog processor in the chain that `pipeline.logging.configure()` sets up for every process: it
reads those event dicts and updates counters and histograms. Gauges about the whole system (outbox
backlog, runs in progress, queue depth) are computed when scraped, by `exposition.SystemCollector`.

Where each process kind exposes them:

- web: `GET /metrics` (`web.health.metrics`). Under gunicorn with several workers, set
  `PROMETHEUS_MULTIPROC_DIR` (infra/gunicorn.conf.py does) and the view adds up every worker's values.
- workers: `rundramatiq` forks several processes; with `PIPELINE_WORKER_METRICS_PORT` set, each
  writes its values to a multiprocess directory (`<PIPELINE_METRICS_DIR>/worker-<master pid>`,
  made fresh when the worker starts) and the first of them to bind the port serves their sum
  (`pipeline.middleware.WorkerMetrics`). Unset (the default): no endpoint.
- scheduler: with `PIPELINE_SCHEDULER_METRICS_PORT` set, an HTTP endpoint in the scheduler
  process (`schedules.metrics`), started with its first log line. Unset (the default): no endpoint.

`PIPELINE_METRICS_ADDR` is the address those two endpoints bind (default 127.0.0.1; containers
need 0.0.0.0). Every name starts with `pipeline_`; counters end in `_total`, durations are
histograms in seconds.

In multiprocess mode a metric must be made after PROMETHEUS_MULTIPROC_DIR is set, and a worker
process only knows its directory once it has booted: the metrics are made on first use, and
`pipeline.middleware.WorkerMetrics` points prometheus_client at the directory before that.

The package: `processor` (the metrics and the log processor that updates them), `http` (the text
format and the HTTP endpoint), `exposition` (what the web and the scheduler serve, with the
scrape-time gauges; queue depths come from `pipeline._broker.queue_depths`; it reads the run store,
so it is not imported here: this package is imported while Django loads its apps), `multiprocess`
(the workers' shared directories). Settings: `pipeline.conf`.
"""
from __future__ import annotations

from ._http import render, start_http_server
from ._multiprocess import prepare_worker_metrics_dir, worker_metrics_dir
from ._processor import observe, prime
from ._settings import bind_address, metrics_base_dir, scheduler_port, worker_port

__all__ = [
    "bind_address",
    "metrics_base_dir",
    "observe",
    "prepare_worker_metrics_dir",
    "prime",
    "render",
    "scheduler_port",
    "start_http_server",
    "worker_metrics_dir",
    "worker_port",
]
