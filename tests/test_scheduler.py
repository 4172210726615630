"""The scheduler process fires on its interval; a fire only starts a run, in the workers."""
import sys
from datetime import datetime, timedelta

import pytest

from pipeline.models import Run
from tests.conftest import ManagedProcess, child_env, wait_for

pytestmark = pytest.mark.broker


def start_scheduler(database_url: str, name: str) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "manage.py", "runscheduler", "--only", "tick_every_second"],
                          child_env(database_url))


def tick_runs():
    return list(Run.objects.filter(pipeline="ticks").order_by("created_at"))


def fire_time(run: Run) -> datetime:
    return datetime.fromisoformat(run.trigger.split("@", 1)[1])


def test_the_scheduler_fires_on_its_interval_and_each_fire_runs_in_a_worker(live_worker, test_database_url):
    scheduler = start_scheduler(test_database_url, "scheduler")
    try:
        wait_for(lambda: len(tick_runs()) >= 4, 30, "four fires of a 1-second schedule")
    finally:
        scheduler.stop()
    runs = tick_runs()
    assert all(r.trigger.startswith("schedule:tick_every_second@") for r in runs)
    times = sorted(fire_time(r) for r in runs)
    assert all(later - earlier == timedelta(seconds=1) for earlier, later in zip(times, times[1:]))
    wait_for(lambda: all(r.status == "succeeded" for r in tick_runs()[: len(runs)]), 20, "the fired runs to finish")
    assert "schedule.fired" in scheduler.output()


def test_two_schedulers_never_start_two_runs_for_one_fire_time(live_worker, test_database_url):
    schedulers = [start_scheduler(test_database_url, f"scheduler-{i}") for i in (1, 2)]
    try:
        wait_for(lambda: len(tick_runs()) >= 5, 40, "five fires")
    finally:
        for s in schedulers:
            s.stop()
    times = [fire_time(r) for r in tick_runs()]
    assert len(times) == len(set(times))
    ordered = sorted(times)
    assert all(later - earlier == timedelta(seconds=1) for earlier, later in zip(ordered, ordered[1:]))
