"""Declaring and operating schedules: fire-time arithmetic on a fixed clock, validation, backfill."""
from datetime import datetime, timezone

import pytest

from pipeline.models import Run
from schedules import ScheduleError, cron, every
from schedules import operations
from schedules.registry import Schedule, schedules
from schedules.timing import fire_key, fire_times, missed_fire_times

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def times(expression: str, zone: str, start: datetime, end: datetime) -> list[str]:
    trigger = Schedule("t", pipeline="ticks", cron=expression, timezone=zone).trigger()
    return [t.astimezone(UTC).strftime("%m-%d %H:%M") for t in fire_times(trigger, start, end)]


def test_cron_in_a_time_zone_follows_the_spring_forward_change():
    # New York moves from UTC-5 to UTC-4 on 2026-03-08: 09:00 local is 14:00 UTC, then 13:00 UTC.
    assert times("0 9 * * *", "America/New_York", utc(2026, 3, 7), utc(2026, 3, 10)) == [
        "03-07 14:00", "03-08 13:00", "03-09 13:00"]
    # 02:30 does not exist that night: the fire happens once, at the first instant after the gap
    # (03:00 EDT, 07:00 UTC).
    assert times("30 2 * * *", "America/New_York", utc(2026, 3, 7), utc(2026, 3, 10)) == [
        "03-07 07:30", "03-08 07:00", "03-09 06:30"]


def test_cron_in_a_time_zone_fires_a_repeated_wall_clock_time_once_when_clocks_go_back():
    assert times("30 1 * * *", "America/New_York", utc(2026, 10, 31), utc(2026, 11, 3)) == [
        "10-31 05:30", "11-01 05:30", "11-02 06:30"]


def test_cron_day_of_week_numbers_mean_what_they_mean_in_crontab():
    weekdays = Schedule("t", pipeline="ticks", cron="0 9 * * 1-5").trigger()
    days = [t.strftime("%a") for t in fire_times(weekdays, utc(2026, 11, 1), utc(2026, 11, 8))]
    assert days == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    sundays = Schedule("t", pipeline="ticks", cron="0 9 * * 0").trigger()
    assert [t.strftime("%a") for t in fire_times(sundays, utc(2026, 11, 1), utc(2026, 11, 15))] == ["Sun", "Sun"]


def test_interval_fire_times_are_the_same_whenever_a_scheduler_starts():
    trigger = Schedule("t", pipeline="ticks", interval_seconds=60).trigger()
    a = trigger.get_next_fire_time(None, utc(2026, 1, 1, 10, 0, 17))
    b = trigger.get_next_fire_time(None, utc(2026, 1, 1, 10, 0, 42))
    assert a == b == utc(2026, 1, 1, 10, 1)


def test_missed_fire_times_start_after_the_last_fire_and_stop_at_now():
    trigger = Schedule("t", pipeline="ticks", interval_seconds=10).trigger()
    missed = missed_fire_times(trigger, utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 45))
    assert [t.second for t in missed] == [20, 30, 40]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
        ({"cron": "* * *"}, "Wrong number of fields"),
        ({"cron": "0 0 * * 8"}, "day of week '8' is out of range 0-7"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "@reboot"}, "unknown nickname '@reboot'"),
        ({"cron": 5}, "a cron expression is a string, not int"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"interval_seconds": 0}, "interval_seconds must be positive"),
        ({"interval_seconds": 5, "overlap": "sometimes"}, "overlap must be one of"),
        ({"interval_seconds": 5, "catch_up": "maybe"}, "catch_up must be one of"),
    ],
)
def test_invalid_schedules_in_code_are_refused_at_declaration(kwargs, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule("bad", pipeline="ticks", **kwargs).check()
    assert "bad" not in schedules


def test_declaring_the_same_schedule_twice_is_refused():
    with pytest.raises(ScheduleError, match="declared twice"):
        every("tick_every_second", seconds=1, pipeline="ticks")
    with pytest.raises(ScheduleError, match="exactly one of pipeline or actor"):
        cron("no_target", "* * * * *")


@pytest.mark.django_db
def test_a_schedule_naming_an_unknown_pipeline_or_a_bad_payload_is_refused():
    with pytest.raises(ScheduleError, match="unknown pipeline 'nope'"):
        operations.create({"name": "x", "pipeline": "nope", "interval_seconds": 5})
    with pytest.raises(ScheduleError, match="invalid payload for 'test.started'"):
        operations.create({"name": "x", "pipeline": "three_stages", "interval_seconds": 5, "payload": {"value": "a"}})


@pytest.mark.django_db(transaction=True)
def test_backfill_creates_exactly_one_run_per_fire_time_and_never_twice(settings, pipelines):
    operations.create({"name": "every_ten_minutes", "pipeline": "ticks", "cron": "*/10 * * * *"})
    result = operations.backfill("every_ten_minutes", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 1, 0))
    assert result == {"fire_times": 7, "runs_started": 7}
    triggers = sorted(Run.objects.filter(pipeline="ticks").values_list("trigger", flat=True))
    assert triggers[0] == "schedule:every_ten_minutes@2026-01-01T00:00:00+00:00"
    assert triggers[-1] == "schedule:every_ten_minutes@2026-01-01T01:00:00+00:00"
    again = operations.backfill("every_ten_minutes", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1, 30))
    assert again == {"fire_times": 7, "runs_started": 3}
    assert Run.objects.filter(pipeline="ticks").count() == 10
    # Run in this process and finished before the test's data is flushed (nothing left writing).
    assert {r.status for r in pipelines.runs("ticks")} == {"succeeded"}


@pytest.mark.django_db
def test_a_scheduler_restarted_inside_the_repeated_hour_does_not_fire_its_time_again(monkeypatch):
    from apscheduler.schedulers.background import BackgroundScheduler

    from schedules import runner
    from schedules.models import ScheduleRecord

    operations.create({"name": "nightly_ny", "pipeline": "ticks", "cron": "30 1 * * *",
                       "timezone": "America/New_York", "catch_up": "all", "catch_up_window_seconds": 86400})
    # 01:30 EDT fired (05:30Z); clocks went back at 06:00Z; the scheduler restarts at 01:10 EST (06:10Z).
    ScheduleRecord.objects.filter(name="nightly_ny").update(
        last_fire_at=utc(2026, 11, 1, 5, 30), created_at=utc(2026, 10, 1), catch_up_from=utc(2026, 10, 1))
    fired = []
    monkeypatch.setattr(runner, "fire", lambda name, fire_time, **kwargs: fired.append(fire_time))
    process = runner.SchedulerProcess(only=["nightly_ny"])
    process.aps = BackgroundScheduler(timezone=UTC)
    process._load(ScheduleRecord.objects.get(name="nightly_ny"), utc(2026, 11, 1, 6, 10), catch_up=True)
    assert fired == []  # nothing missed: 01:30 already fired, in its first occurrence
    next_fire = utc(2026, 11, 2, 6, 30)  # 01:30 EST the next day, not 01:30 EST today (06:30Z)
    assert ScheduleRecord.objects.get(name="nightly_ny").next_fire_at == next_fire
    assert process.aps.get_job("nightly_ny").next_run_time == next_fire
    # Restarted later that night (02:40 EST), catch-up still finds nothing to fire.
    process._load(ScheduleRecord.objects.get(name="nightly_ny"), utc(2026, 11, 1, 7, 40), catch_up=True)
    assert fired == []


def test_fire_keys_are_in_utc_whatever_the_zone():
    paris = datetime(2026, 7, 1, 9, 0, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert fire_key("s", paris) == "schedule:s@2026-07-01T07:00:00+00:00"


# ---- the API ------------------------------------------------------------------------------

def api(client, method, url, token, body=None):
    import json

    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(url, **kwargs)


@pytest.mark.django_db
def test_schedules_api_creates_lists_pauses_resumes_and_deletes(client, api_token):
    created = api(client, "post", "/api/schedules", api_token, {
        "name": "nightly", "pipeline": "ticks", "cron": "30 2 * * *", "timezone": "Europe/Paris",
        "overlap": "skip", "catch_up": "all"})
    assert created.status_code == 201, created.json()
    assert created.json()["overlap"] == "skip"
    names = [s["name"] for s in api(client, "get", "/api/schedules", api_token).json()["schedules"]]
    assert "nightly" in names
    assert api(client, "post", "/api/schedules/nightly/pause", api_token).json()["paused"] is True
    assert api(client, "post", "/api/schedules/nightly/resume", api_token).json()["paused"] is False
    changed = api(client, "patch", "/api/schedules/nightly", api_token, {"cron": "0 3 * * *"})
    assert changed.status_code == 200 and changed.json()["cron"] == "0 3 * * *"
    assert api(client, "delete", "/api/schedules/nightly", api_token).status_code == 200
    assert api(client, "get", "/api/schedules/nightly", api_token).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"name": "b", "pipeline": "ticks", "cron": "99 * * * *"}, "cron", "invalid cron expression"),
        ({"name": "b", "pipeline": "ticks", "cron": 5}, "cron", "must be a string"),
        ({"name": "b", "pipeline": "ticks", "cron": "@fortnightly"}, "cron", "unknown nickname"),
        ({"name": "b", "pipeline": "ticks", "cron": "0 1 * * *", "timezone": "Nowhere/City"}, "timezone",
         "unknown time zone"),
        ({"name": "b", "pipeline": "missing", "interval_seconds": 5}, "pipeline", "unknown pipeline 'missing'"),
        ({"name": "b", "pipeline": "ticks"}, "cron", "exactly one of cron, interval_seconds or run_at"),
        ({"name": "b", "pipeline": "ticks", "interval_seconds": "often"}, "interval_seconds", "must be a number"),
        ({"name": "b", "pipeline": "ticks", "interval_seconds": 5, "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_schedules_api_rejects_invalid_schedules_with_400_naming_the_field(client, api_token, body, field, message):
    response = api(client, "post", "/api/schedules", api_token, body)
    assert response.status_code == 400
    assert response.json()["field"] == field and message in response.json()["error"]


@pytest.mark.django_db
def test_the_next_fire_shows_as_soon_as_a_schedule_is_created_changed_or_resumed(client, api_token):
    from zoneinfo import ZoneInfo

    year = datetime.now(UTC).year
    created = api(client, "post", "/api/schedules", api_token, {
        "name": "new_year_lh", "pipeline": "ticks", "cron": "@yearly", "timezone": "Australia/Lord_Howe"}).json()
    first_next_year = datetime(year + 1, 1, 1, tzinfo=ZoneInfo("Australia/Lord_Howe"))
    assert datetime.fromisoformat(created["next_fire_at"]) == first_next_year
    changed = api(client, "patch", "/api/schedules/new_year_lh", api_token, {"cron": "0 0 1 * 1"}).json()
    assert datetime.fromisoformat(changed["next_fire_at"]) < first_next_year  # a Monday or a 1st comes sooner
    assert api(client, "post", "/api/schedules/new_year_lh/pause", api_token).json()["next_fire_at"] is None
    resumed = api(client, "post", "/api/schedules/new_year_lh/resume", api_token).json()
    assert resumed["next_fire_at"] == changed["next_fire_at"]


@pytest.mark.django_db
def test_schedules_declared_in_code_can_be_paused_but_not_edited_through_the_api(client, api_token):
    from schedules.operations import sync_code_schedules

    sync_code_schedules()
    response = api(client, "patch", "/api/schedules/tick_every_second", api_token, {"interval_seconds": 5})
    assert response.status_code == 409 and "declared in code" in response.json()["error"]
    assert api(client, "post", "/api/schedules/tick_every_second/pause", api_token).json()["paused"] is True


@pytest.mark.django_db(transaction=True)
def test_trigger_now_and_backfill_through_the_api(client, api_token):
    api(client, "post", "/api/schedules", api_token, {"name": "hourly", "pipeline": "ticks", "cron": "0 * * * *"})
    triggered = api(client, "post", "/api/schedules/hourly/trigger", api_token)
    assert triggered.status_code == 202 and Run.objects.filter(id=triggered.json()["run_id"]).exists()
    backfilled = api(client, "post", "/api/schedules/hourly/backfill", api_token,
                     {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T05:00:00+00:00"})
    assert backfilled.json() == {"schedule": "hourly", "fire_times": 6, "runs_started": 6}
    naive = api(client, "post", "/api/schedules/hourly/backfill", api_token,
                {"start": "2026-01-01T00:00:00", "end": "2026-01-01T05:00:00"})
    assert naive.status_code == 400 and "UTC offset" in naive.json()["error"]
