"""What the web's and the scheduler's scrapes see: the log-counted metrics and the gauges computed
when scraped (store, outbox, queues)."""
from __future__ import annotations

import os
from typing import Any, Iterator

from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from .._broker import queue_depths, stage_queues
from ..models import Event, Run
from .._status_index import status_in
from .._statuses import ACTIVE_RUN_STATUSES
from ._http import render
from ._processor import prime


class SystemCollector:
    """The outbox backlog and its oldest event's age, runs in progress, and the depth and consumers
    of every stage queue (with its delay `.DQ` and dead-letter `.XQ` queues), read when scraped."""

    def __init__(self, close_db: bool = False) -> None:
        self.close_db = close_db  # outside a request (the scheduler's endpoint): drop the connection

    def collect(self) -> Iterator[Any]:
        yield from self._store(GaugeMetricFamily)
        yield from self._queues(GaugeMetricFamily)

    def _store(self, Gauge: Any) -> Iterator[Any]:
        up = Gauge("pipeline_store_up", "1 when the run store answered this scrape's queries.")
        try:
            backlog = Event.objects.filter(published_at__isnull=True).aggregate(n=Count("id"), oldest=Min("occurred_at"))
            active = list(
                Run.objects.filter(status_in(ACTIVE_RUN_STATUSES))
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


def exposition(system: bool = True, close_db: bool = False) -> tuple[bytes, str]:
    """This process's metrics (or, in multiprocess mode, every process's sum) in Prometheus's text
    format, with the system gauges; returns (body, content type)."""
    prime()  # the metrics exist, with zeros, before the first transition
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        source: Any = registry
    else:
        source = REGISTRY
    collectors = [source, SystemCollector(close_db=close_db)] if system else [source]
    return render(_Combined(*collectors))
