"""One answer to "is this worker alive?": the dashboard's online/offline, `workerhealth` and the
check that lets a redelivered stage take over from its holder all read `pipeline._liveness`."""
from datetime import timedelta

import pytest
from django.utils import timezone

from pipeline import live_workers, worker_is_offline, worker_offline_after
from pipeline.models import WorkerHeartbeat
from web.dashboard import workers


def beat(pid: int, silent_for: float, stopped: bool = False) -> WorkerHeartbeat:
    now = timezone.now()
    return WorkerHeartbeat.objects.create(
        host="liveness-host", pid=pid, queues=["pipeline"], started_at=now - timedelta(hours=1),
        last_seen=now - timedelta(seconds=silent_for), stopped_at=now if stopped else None,
    )


def test_a_worker_counts_as_offline_after_four_heartbeats_unless_the_setting_says_otherwise(settings):
    settings.PIPELINE_HEARTBEAT_SECONDS = 2.0
    settings.PIPELINE_WORKER_OFFLINE_AFTER_SECONDS = None
    assert worker_offline_after() == 8.0
    settings.PIPELINE_WORKER_OFFLINE_AFTER_SECONDS = 30
    assert worker_offline_after() == 30.0


@pytest.mark.django_db
def test_the_dashboard_and_the_live_worker_query_draw_the_line_in_the_same_place(settings):
    settings.PIPELINE_WORKER_OFFLINE_AFTER_SECONDS = 20
    alive, silent, stopped = beat(1, 5), beat(2, 60), beat(3, 1, stopped=True)
    now = timezone.now()
    assert set(live_workers(now).values_list("pid", flat=True)) == {alive.pid}
    assert not worker_is_offline(alive, now) and worker_is_offline(silent, now)
    states = {row.beat.pid: row.state for row in workers.worker_rows(now)}
    assert states == {alive.pid: "online", silent.pid: "offline", stopped.pid: "stopped"}
    assert workers.online_count(now) == 1
    settings.PIPELINE_WORKER_OFFLINE_AFTER_SECONDS = 90  # one setting moves every reader
    assert set(live_workers(now).values_list("pid", flat=True)) == {alive.pid, silent.pid}
    assert {row.beat.pid: row.state for row in workers.worker_rows(now)}[silent.pid] == "online"
