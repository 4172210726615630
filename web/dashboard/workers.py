"""Worker processes as their heartbeats describe them: online, offline (silent past the engine's
threshold, `pipeline.worker_offline_after`: killed, hung, or its host gone) or stopped (shut down
cleanly)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from pipeline import WorkerHeartbeat, live_workers, worker_is_offline

SHOW_GONE_FOR = timedelta(hours=24)


@dataclass
class WorkerRow:
    beat: WorkerHeartbeat
    state: str  # online | offline | stopped
    silent_for: float


def worker_rows(now: datetime | None = None) -> list[WorkerRow]:
    now = now or timezone.now()
    beats = WorkerHeartbeat.objects.filter(
        Q(last_seen__gte=now - SHOW_GONE_FOR) | Q(stopped_at__isnull=True, last_seen__gte=now - timedelta(days=7))
    ).order_by("-last_seen")[:500]
    rows = []
    for beat in beats:
        state = "stopped" if beat.stopped_at else ("offline" if worker_is_offline(beat, now) else "online")
        rows.append(WorkerRow(beat, state, (now - beat.last_seen).total_seconds()))
    order = {"online": 0, "offline": 1, "stopped": 2}
    rows.sort(key=lambda r: (order[r.state], r.beat.host, r.beat.pid))
    return rows


def online_count(now: datetime | None = None) -> int:
    return live_workers(now).count()
