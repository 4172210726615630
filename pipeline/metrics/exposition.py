"""What a scrape sees: the log-counted metrics, the gauges computed when scraped (store, outbox,
queues), in Prometheus's text format; and the small HTTP server the worker and scheduler endpoints use."""
from __future__ import annotations

import os
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone

from ..broker import queue_depths, stage_queues
from .processor import metric_families, prime
from .settings import bind_address


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
        for metric in metric_families():
            for family in metric.describe():
                if family.name not in seen:
                    yield family


class SystemCollector:
    """The outbox backlog and its oldest event's age, runs in progress, and the depth and consumers
    of every stage queue (with its delay `.DQ` and dead-letter `.XQ` queues), read when scraped."""

    def __init__(self, close_db: bool = False) -> None:
        self.close_db = close_db  # outside a request (the scheduler's endpoint): drop the connection

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # lazily: see the package's doc

        yield from self._store(GaugeMetricFamily)
        yield from self._queues(GaugeMetricFamily)

    def _store(self, Gauge: Any) -> Iterator[Any]:
        # Not at the top: the log set-up imports this package before Django's app registry is ready.
        from ..models import ACTIVE_RUN_STATUSES, Event, Run

        up = Gauge("pipeline_store_up", "1 when the run store answered this scrape's queries.")
        try:
            backlog = Event.objects.filter(published_at__isnull=True).aggregate(n=Count("id"), oldest=Min("occurred_at"))
            active = list(
                Run.objects.filter(status__in=ACTIVE_RUN_STATUSES)
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
            states = queue_depths(f"{base}{suffix}" for base in stage_queues() for suffix in ("", ".DQ", ".XQ"))
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
