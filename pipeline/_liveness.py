"""When a worker process counts as alive: it has not stopped, and it wrote its heartbeat
(`pipeline.middleware.Heartbeat`, every PIPELINE_HEARTBEAT_SECONDS) within
PIPELINE_WORKER_OFFLINE_AFTER_SECONDS. One definition, so the dashboard's "online", the
`workerhealth` probe and the check that lets a redelivered stage take over from a silent holder
never disagree about the same worker."""
from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from . import conf
from .models import WorkerHeartbeat


def worker_offline_after() -> float:
    """Seconds of silence after which a worker that has not stopped counts as offline: the
    setting, else four heartbeats (one late beat on a busy host is no death)."""
    value = conf.get("PIPELINE_WORKER_OFFLINE_AFTER_SECONDS")
    return float(value) if value is not None else 4 * float(conf.get("PIPELINE_HEARTBEAT_SECONDS"))


def worker_is_offline(beat: WorkerHeartbeat, now: datetime | None = None) -> bool:
    """Whether this heartbeat row's worker, not stopped, has been silent too long."""
    return ((now or timezone.now()) - beat.last_seen).total_seconds() > worker_offline_after()


def live_workers(now: datetime | None = None, within: float | None = None) -> QuerySet[WorkerHeartbeat]:
    """The heartbeat rows of the worker processes alive now (filter further by host or pid):
    not stopped, and beating within `within` seconds (default: `worker_offline_after()`)."""
    since = (now or timezone.now()) - timedelta(seconds=worker_offline_after() if within is None else within)
    return WorkerHeartbeat.objects.filter(stopped_at__isnull=True, last_seen__gte=since)
