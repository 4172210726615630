"""Worker processes as their heartbeats describe them: online, offline (silent past the
threshold: killed, hung, or its host gone) or stopped (shut down cleanly)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from pipeline import WorkerHeartbeat, conf

SHOW_GONE_FOR = timedelta(hours=24)


def offline_after() -> float:
    return float(conf.get("PIPELINE_WORKER_OFFLINE_AFTER_SECONDS"))


@dataclass
class WorkerRow:
    beat: WorkerHeartbeat
    state: str  # online | offline | stopped
    silent_for: float


def worker_rows(now: datetime | None = None) -> list[WorkerRow]:
    now = now or timezone.now()
    threshold = offline_after()
    beats = WorkerHeartbeat.objects.filter(
        Q(last_seen__gte=now - SHOW_GONE_FOR) | Q(stopped_at__isnull=True, last_seen__gte=now - timedelta(days=7))
    ).order_by("-last_seen")[:500]
    rows = []
    for beat in beats:
        silent = (now - beat.last_seen).total_seconds()
        state = "stopped" if beat.stopped_at else ("offline" if silent > threshold else "online")
        rows.append(WorkerRow(beat, state, silent))
    order = {"online": 0, "offline": 1, "stopped": 2}
    rows.sort(key=lambda r: (order[r.state], r.beat.host, r.beat.pid))
    return rows


def online_count(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return WorkerHeartbeat.objects.filter(
        stopped_at__isnull=True, last_seen__gte=now - timedelta(seconds=offline_after())
    ).count()
