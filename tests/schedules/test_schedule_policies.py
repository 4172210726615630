"""What a fire does, on a clock of the test's own (schedules.testing.ScheduleClock) with the runs in
the test process (pipeline.testing): fire times, one run per fire time however often it is
fired, pause, and the overlap policies (allow, skip, buffer_one). The scheduler processes
themselves (leadership, catch-up after a kill, jitter) are the broker tier's (test_scheduler.py)."""
from datetime import datetime, timezone

import pytest

from pipeline.models import Run
from schedules import operations
from schedules.models import ScheduleRecord
from schedules.testing import ScheduleClock

UTC = timezone.utc
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock(pipelines) -> ScheduleClock:
    return ScheduleClock(START)


def test_the_next_fire_times_of_a_cron_schedule_in_its_time_zone(clock):
    operations.create({"name": "nightly", "pipeline": "ticks", "cron": "0 2 * * *", "timezone": "Europe/Paris"})
    assert clock.next_fire_times("nightly", 3) == [utc(2026, 3, 2, 1, 0), utc(2026, 3, 3, 1, 0), utc(2026, 3, 4, 1, 0)]
    # After the change to summer time (29 March), 02:00 in Paris is 00:00 UTC.
    assert clock.next_fire_times("nightly", 1, after=utc(2026, 3, 30, 12, 0)) == [utc(2026, 3, 31, 0, 0)]


def test_advancing_the_clock_fires_each_fire_time_passed_and_each_fire_is_a_run(clock, pipelines):
    # This test's schedules only: the test app's every-second one would add 180 runs to drain.
    ScheduleRecord.objects.all().delete()
    operations.create({"name": "every_minute", "pipeline": "ticks", "interval_seconds": 60})
    operations.create({"name": "every_two_minutes", "pipeline": "ticks", "interval_seconds": 120})
    fired = clock.advance(minutes=3)
    assert [(f["fire_time"], f["schedule"]) for f in fired] == [  # every schedule's, in order
        (utc(2026, 3, 1, 12, 1), "every_minute"), (utc(2026, 3, 1, 12, 2), "every_minute"),
        (utc(2026, 3, 1, 12, 2), "every_two_minutes"), (utc(2026, 3, 1, 12, 3), "every_minute")]
    runs = [pipelines.run(f["run_id"]) for f in fired if f["schedule"] == "every_minute"]
    assert [r.status for r in runs] == ["succeeded"] * 3
    assert runs[0].trigger == "schedule:every_minute@2026-03-01T12:01:00+00:00"
    assert [l["fire_time"] for l in pipelines.logs("schedule.fired", schedule_id="every_minute")] == [
        "2026-03-01T12:01:00+00:00", "2026-03-01T12:02:00+00:00", "2026-03-01T12:03:00+00:00"]


def test_a_fire_time_fired_twice_starts_one_run(clock, pipelines):
    operations.create({"name": "hourly", "pipeline": "ticks", "cron": "0 * * * *"})
    first = clock.fire("hourly", utc(2026, 3, 1, 13, 0))
    again = clock.fire("hourly", utc(2026, 3, 1, 13, 0))
    assert first["event_id"] == again["event_id"]
    pipelines.drain()
    assert Run.objects.filter(trigger__startswith="schedule:hourly@").count() == 1


def test_a_paused_schedule_does_not_fire_but_trigger_now_does(clock, pipelines):
    operations.create({"name": "paused_one", "pipeline": "ticks", "interval_seconds": 60})
    operations.pause("paused_one")
    assert clock.fire("paused_one") is None
    assert pipelines.logs("schedule.skipped", schedule_id="paused_one")[0]["reason"] == "paused"
    started = operations.trigger_now("paused_one")
    pipelines.run(started["run_id"]).assert_succeeded()


def test_overlap_skip_starts_no_second_run_while_one_is_running(clock, pipelines):
    operations.create({"name": "skipper", "pipeline": "ticks", "interval_seconds": 60, "overlap": "skip"})
    first = clock.fire("skipper", utc(2026, 3, 1, 12, 1))  # not drained: its run is still pending
    assert clock.fire("skipper", utc(2026, 3, 1, 12, 2)) is None
    (skipped,) = pipelines.logs("schedule.skipped", schedule_id="skipper")
    assert skipped["reason"] == "overlap" and skipped["running_run_id"] == first["run_id"]
    pipelines.run(first["run_id"]).assert_succeeded()
    third = clock.fire("skipper", utc(2026, 3, 1, 12, 3))  # the first run has ended: this one starts
    pipelines.run(third["run_id"]).assert_succeeded()
    assert Run.objects.filter(trigger__startswith="schedule:skipper@").count() == 2


def test_overlap_allow_starts_a_run_per_fire_even_while_one_is_running(clock, pipelines):
    operations.create({"name": "allower", "pipeline": "ticks", "interval_seconds": 60})
    first = clock.fire("allower", utc(2026, 3, 1, 12, 1))
    second = clock.fire("allower", utc(2026, 3, 1, 12, 2))
    assert first and second and first["run_id"] != second["run_id"]
    assert {r.status for r in pipelines.runs("ticks")} == {"succeeded"}


def test_overlap_buffer_one_keeps_one_waiting_fire_and_starts_it_once_the_running_run_ended(clock, pipelines):
    operations.create({"name": "buffered", "pipeline": "ticks", "interval_seconds": 60, "overlap": "buffer_one"})
    first = clock.fire("buffered", utc(2026, 3, 1, 12, 1))
    assert clock.fire("buffered", utc(2026, 3, 1, 12, 2)) is None  # buffered
    assert clock.fire("buffered", utc(2026, 3, 1, 12, 3)) is None  # still one waiting fire, not two
    assert len(pipelines.logs("schedule.buffered", schedule_id="buffered")) == 2
    pipelines.run(first["run_id"]).assert_succeeded()
    # The next fire finds the run ended: the buffered fire (12:02) starts, and this one (12:04)
    # waits behind it in its turn.
    assert clock.fire("buffered", utc(2026, 3, 1, 12, 4)) is None
    pipelines.drain()
    triggers = sorted(Run.objects.filter(trigger__startswith="schedule:buffered@").values_list("trigger", flat=True))
    assert [t.rsplit("T", 1)[1] for t in triggers] == ["12:01:00+00:00", "12:02:00+00:00"]
    assert len(pipelines.logs("schedule.buffered", schedule_id="buffered")) == 3
    started = [l for l in pipelines.logs("schedule.fired", schedule_id="buffered") if l["reason"] == "buffered"]
    assert [l["fire_time"] for l in started] == ["2026-03-01T12:02:00+00:00"]
