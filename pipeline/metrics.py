"""Prometheus metrics, without touching the engine's hot path.

Every run and stage transition is already one structured log line (`run.started`,
`stage.succeeded` with `duration_ms`, `schedule.fired` with `fire_delay_ms`, ...). `observe` is a
structlog processor in the chain that `pipeline.logging.configure()` sets up for every process: it
reads those event dicts and updates counters and histograms. Gauges about the whole system (outbox
backlog, runs in progress, queue depth) are computed when scraped, by `SystemCollector`.

Where each process kind exposes them:

- web: `GET /metrics` (`web.health.metrics`). Under gunicorn with several workers, set
  `PROMETHEUS_MULTIPROC_DIR` (infra/gunicorn.conf.py does) and the view adds up every worker's values.
- workers: `rundramatiq` forks several processes; with `PIPELINE_WORKER_METRICS_PORT` set, each
  writes its values to a multiprocess directory (`<PIPELINE_METRICS_DIR>/worker-<master pid>`,
  made fresh when the worker starts) and the first of them to bind the port serves their sum
  (`WorkerMetrics`). Unset (the default): no endpoint.
- scheduler: with `PIPELINE_SCHEDULER_METRICS_PORT` set, an HTTP endpoint in the scheduler
  process, started with its first log line. Unset (the default): no endpoint.

`PIPELINE_METRICS_ADDR` is the address those two endpoints bind (default 127.0.0.1; containers
need 0.0.0.0). Every name starts with `pipeline_`; counters end in `_total`, durations are
histograms in seconds.

prometheus_client is imported lazily: in multiprocess mode it must see PROMETHEUS_MULTIPROC_DIR
before it creates a metric, and a worker process only knows its directory once it has booted.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import threading
from socketserver import ThreadingMixIn
from pathlib import Path
from typing import Any, Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from dramatiq.middleware import Middleware

from .files import open_private, private_dir, write_private

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
FIRE_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_CHECK_TIMEOUT = 2.0

_lock = threading.Lock()
_metrics: "_Metrics | None" = None
_server_started_in: int | None = None  # pid of the process whose scheduler endpoint runs


# --- configuration (environment only: the worker's exposition process has no Django) ------------
def _port(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value and value != "0" else None


def worker_port() -> int | None:
    return _port("PIPELINE_WORKER_METRICS_PORT")


def scheduler_port() -> int | None:
    return _port("PIPELINE_SCHEDULER_METRICS_PORT")


def bind_address() -> str:
    return os.environ.get("PIPELINE_METRICS_ADDR", "127.0.0.1")


def metrics_base_dir() -> Path:
    if os.environ.get("PIPELINE_METRICS_DIR"):
        return Path(os.environ["PIPELINE_METRICS_DIR"])
    var = os.environ.get("PIPELINE_VAR_DIR") or str(Path(__file__).resolve().parent.parent / "var")
    return Path(var) / "prometheus"


# --- the metrics updated from log lines ----------------------------------------------------------
class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.runs_started = Counter(
            "pipeline_runs_started_total", "Runs that started (their first stage began).", ["pipeline"])
        self.runs_finished = Counter(
            "pipeline_runs_finished_total", "Runs that ended, by outcome (succeeded, failed, cancelled).",
            ["pipeline", "outcome"])
        self.run_duration = Histogram(
            "pipeline_run_duration_seconds", "From a run's start to its end.", ["pipeline", "outcome"],
            buckets=RUN_BUCKETS)
        self.stage_duration = Histogram(
            "pipeline_stage_duration_seconds",
            "Time in the stage's function, per attempt, by outcome (succeeded, retrying, failed).",
            ["pipeline", "stage", "outcome"], buckets=STAGE_BUCKETS)
        self.stage_retries = Counter(
            "pipeline_stage_retries_total", "Stage attempts that failed and were scheduled again.",
            ["pipeline", "stage"])
        self.events_emitted = Counter(
            "pipeline_events_emitted_total", "Events accepted by emit (stored in the outbox).", ["type"])
        self.schedule_fires = Counter(
            "pipeline_schedule_fires_total", "Schedule fires that started a run, by reason.", ["schedule", "reason"])
        self.fire_delay = Histogram(
            "pipeline_schedule_fire_delay_seconds",
            "How late a scheduled fire started its run, after its nominal fire time (on-time fires only).",
            ["schedule"], buckets=FIRE_DELAY_BUCKETS)


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


_children: dict[tuple, Any] = {}
_RUN_OUTCOMES = ("succeeded", "failed", "cancelled")


def prime() -> _Metrics:
    """The metrics, with a zero sample for every pipeline, outcome, stage and event type declared
    in code: an endpoint shows real zeros from its first scrape, not an empty page (in a worker's
    multiprocess mode a family appears only once a sample of it is written), and `rate()` sees a
    counter's first increment. Histograms are not primed (a page of empty buckets per stage and
    outcome); their HELP and TYPE still show (`_EveryFamily`)."""
    m = _get()
    from .definitions import registry

    for pipeline in list(registry.pipelines.values()):
        _child(m.runs_started, pipeline.name)
        for outcome in _RUN_OUTCOMES:
            _child(m.runs_finished, pipeline.name, outcome)
        for stage in pipeline.stages:
            _child(m.stage_retries, pipeline.name, stage)
        _child(m.events_emitted, pipeline.event_type)
    return m


class _EveryFamily:
    """What `collector` collects, then the HELP and TYPE of every metric family of ours it did not
    (no sample yet): a scraper sees each family from the first scrape, whatever the process kind."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        seen = set()
        for family in self.collector.collect():
            seen.add(family.name)
            yield family
        for metric in vars(_get()).values():
            for family in metric.describe():
                if family.name not in seen:
                    yield family


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: prometheus_client validates and locks on every call
    (about 1 µs), and this runs on every transition line. Label sets are few (pipelines x stages)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def _seconds(event: dict, key: str = "duration_ms") -> float | None:
    value = event.get(key)
    return float(value) / 1000 if isinstance(value, (int, float)) else None


def _label(event: dict, key: str) -> str:
    return str(event.get(key) or "unknown")


def _run_started(m: _Metrics, e: dict) -> None:
    _child(m.runs_started, _label(e, "pipeline")).inc()


def _run_finished(outcome: str) -> Callable[[_Metrics, dict], None]:
    def handle(m: _Metrics, e: dict) -> None:
        pipeline = _label(e, "pipeline")
        _child(m.runs_finished, pipeline, outcome).inc()
        seconds = _seconds(e)
        if seconds is not None:
            _child(m.run_duration, pipeline, outcome).observe(seconds)

    return handle


def _stage_finished(outcome: str) -> Callable[[_Metrics, dict], None]:
    def handle(m: _Metrics, e: dict) -> None:
        seconds = _seconds(e)
        if seconds is None:  # e.g. `stage.failed` of a cancelled run: no attempt behind it
            return
        pipeline, stage = _label(e, "pipeline"), _label(e, "stage")
        _child(m.stage_duration, pipeline, stage, outcome).observe(seconds)
        if outcome == "retrying":
            _child(m.stage_retries, pipeline, stage).inc()

    return handle


def _event_emitted(m: _Metrics, e: dict) -> None:
    _child(m.events_emitted, _label(e, "event_type")).inc()


def _schedule_fired(m: _Metrics, e: dict) -> None:
    schedule, reason = _label(e, "schedule_id"), _label(e, "reason")
    _child(m.schedule_fires, schedule, reason).inc()
    seconds = _seconds(e, "fire_delay_ms")
    # Catch-up, buffered, manual and backfill fires are late on purpose: they would drown the signal.
    if seconds is not None and reason == "schedule":
        _child(m.fire_delay, schedule).observe(max(0.0, seconds))


_HANDLERS: dict[str, Callable[[_Metrics, dict], None]] = {
    "run.started": _run_started,
    "run.succeeded": _run_finished("succeeded"),
    "run.failed": _run_finished("failed"),
    "run.cancelled": _run_finished("cancelled"),
    "stage.succeeded": _stage_finished("succeeded"),
    "stage.retrying": _stage_finished("retrying"),
    "stage.failed": _stage_finished("failed"),
    "event.emitted": _event_emitted,
    "schedule.fired": _schedule_fired,
}


def observe(_logger: Any, _method: str, event_dict: dict) -> dict:
    """structlog processor: counts the transitions that log lines announce; never raises. One dict
    lookup per line. It sits in our native chain only (pipeline/logging.py), never in the chain of
    third-party stdlib records, so a library line that happens to say `run.started` is not counted."""
    event = event_dict.get("event")
    handler = _HANDLERS.get(event) if type(event) is str else None
    if handler is not None:
        try:
            handler(_get(), event_dict)
        except Exception:  # pragma: no cover - metrics must never break logging
            pass
    return event_dict


# --- gauges computed at scrape time ---------------------------------------------------------------
class SystemCollector:
    """The outbox backlog and its oldest event's age, runs in progress, and the depth and consumers
    of every stage queue (with its delay `.DQ` and dead-letter `.XQ` queues), read when scraped."""

    def __init__(self, close_db: bool = False) -> None:
        self.close_db = close_db  # outside a request (the scheduler's endpoint): drop the connection

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield from self._store(GaugeMetricFamily)
        yield from self._queues(GaugeMetricFamily)

    def _store(self, Gauge: Any) -> Iterator[Any]:
        from django.db import connection
        from django.db.models import Count, Min
        from django.utils import timezone

        from .models import Event, Run, RunStatus

        up = Gauge("pipeline_store_up", "1 when the run store answered this scrape's queries.")
        try:
            backlog = Event.objects.filter(published_at__isnull=True).aggregate(n=Count("id"), oldest=Min("occurred_at"))
            active = list(
                Run.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
                .values("pipeline", "status").annotate(n=Count("id")).order_by()
            )
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        finally:
            if self.close_db:
                connection.close()
        up.add_metric([], 1)
        yield up
        count = Gauge("pipeline_outbox_unpublished_events", "Events committed but not yet published to the broker.")
        count.add_metric([], backlog["n"] or 0)
        yield count
        age = Gauge("pipeline_outbox_oldest_unpublished_age_seconds",
                    "Age of the oldest unpublished event (0 when none is waiting).")
        oldest = backlog["oldest"]
        age.add_metric([], max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0)
        yield age
        runs = Gauge("pipeline_runs_in_progress", "Runs pending or running right now.", labels=["pipeline", "status"])
        for row in active:
            runs.add_metric([row["pipeline"], row["status"]], row["n"])
        yield runs

    def _queues(self, Gauge: Any) -> Iterator[Any]:
        up = Gauge("pipeline_broker_up", "1 when the broker answered this scrape's queue checks.")
        try:
            states = queue_states(timeout=QUEUE_CHECK_TIMEOUT)
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        messages = Gauge("pipeline_queue_messages", "Messages ready in the queue (not delivered to a worker).",
                         labels=["queue"])
        consumers = Gauge("pipeline_queue_consumers", "Consumers attached to the queue.", labels=["queue"])
        for name, (ready, attached) in sorted(states.items()):
            messages.add_metric([name], ready)
            consumers.add_metric([name], attached)
        yield messages
        yield consumers


def stage_queue_names() -> list[str]:
    """The queues stage actors are declared on, each with its delay and dead-letter queue."""
    import dramatiq

    names: set[str] = set()
    for queue in dramatiq.get_broker().get_declared_queues():
        base = queue[:-3] if queue.endswith((".DQ", ".XQ")) else queue
        names.update((base, f"{base}.DQ", f"{base}.XQ"))
    return sorted(names)


def queue_states(url: str | None = None, timeout: float = QUEUE_CHECK_TIMEOUT) -> dict[str, tuple[int, int]]:
    """(messages ready, consumers) of each stage queue, by passive declares on one short-lived
    connection; a queue that does not exist yet is left out."""
    import logging

    import pika

    from . import conf

    params = pika.URLParameters(url or conf.get("PIPELINE_BROKER_URL"))
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.stack_timeout = timeout + 1
    params.blocked_connection_timeout = timeout
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    pika_logger.setLevel(logging.CRITICAL)
    try:
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            states: dict[str, tuple[int, int]] = {}
            for name in stage_queue_names():
                try:
                    frame = channel.queue_declare(queue=name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
                    channel = connection.channel()
                    continue
                states[name] = (frame.method.message_count, frame.method.consumer_count)
            return states
        finally:
            if connection.is_open:
                connection.close()
    finally:
        pika_logger.setLevel(level)


class _Combined:
    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Any]:
        for collector in self.collectors:
            yield from collector.collect()


def render(collector: Any) -> tuple[bytes, str]:
    """`collector`'s metrics in Prometheus's text format, as every endpoint of ours serves them (web,
    worker, scheduler: one format version, prometheus_client's CONTENT_TYPE_LATEST, whatever the
    scraper's Accept header); returns (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_EveryFamily(collector)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


def exposition(system: bool = True, close_db: bool = False) -> tuple[bytes, str]:
    """This process's metrics (or, in multiprocess mode, every process's sum) in Prometheus's text
    format, with the system gauges; returns (body, content type)."""
    from prometheus_client import REGISTRY, CollectorRegistry

    prime()  # the metrics exist, with zeros, before the first transition
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        source: Any = registry
    else:
        source = REGISTRY
    collectors = [source, SystemCollector(close_db=close_db)] if system else [source]
    return render(_Combined(*collectors))


# --- the scheduler's endpoint ---------------------------------------------------------------------
class _SchedulerExposition:
    def collect(self) -> Iterator[Any]:
        from prometheus_client import REGISTRY

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

        structlog.get_logger("pipeline.metrics").warning("metrics.endpoint_failed", port=port, error=str(exc))
        return

    structlog.get_logger("pipeline.metrics").info("metrics.listening", port=port, address=bind_address())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a line each
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def start_http_server(port: int, registry: Any) -> Any:
    """Serves `registry` on `port` (any path) from a daemon thread, rendered by `render` like the
    web's /metrics (prometheus_client's own server would answer version 0.0.4 to a plain GET)."""
    prime()

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        body, content_type = render(registry)
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    address = bind_address()
    server_class = type("_Server", (_ThreadingWSGIServer,), {
        "address_family": socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]})
    server = make_server(address, port, app, server_class=server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    return server


# --- workers: one multiprocess directory per `rundramatiq`, one endpoint for all its processes -----
def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_metrics_dir(master_pid: int | None = None) -> Path:
    return metrics_base_dir() / f"worker-{master_pid or os.getppid()}"


def prepare_worker_metrics_dir(master_pid: int) -> Path:
    """The directory of this master's worker processes: made fresh at the master's first worker
    boot (a directory left by a dead master, or by an earlier process with the same pid, is wiped)."""
    base = private_dir(metrics_base_dir())
    here = worker_metrics_dir(master_pid)
    started = _start_time(master_pid) or "unknown"
    with os.fdopen(open_private(base / ".lock", os.O_WRONLY | os.O_APPEND), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for old in base.glob("worker-*"):
                pid = old.name.removeprefix("worker-")
                marker = old / ".master"
                alive = pid.isdigit() and _start_time(int(pid)) is not None
                same = marker.exists() and marker.read_text() == (_start_time(int(pid)) if alive else None)
                if old != here and not (alive and same):
                    shutil.rmtree(old, ignore_errors=True)
            marker = here / ".master"
            if here.exists() and not (marker.exists() and marker.read_text() == started):
                shutil.rmtree(here, ignore_errors=True)
            if not here.exists():
                private_dir(here)
                write_private(marker, started)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return here


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
        import prometheus_client.values as values

        values.ValueClass = values.get_value_class()  # in case prometheus_client was imported earlier
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

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
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
