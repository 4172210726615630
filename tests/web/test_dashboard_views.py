"""The dashboard's pages and the runs API through Django's test client: who may see them, CSRF on
every action, filters, pagination, the run page's graph, waterfall, errors, payload and logs,
worker heartbeats, and the OpenAPI schema covering every /api route."""
from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from pipeline.models import Event, Run, StageRun, WorkerHeartbeat
from tests.conftest import wait_for

PAGES = ["/dashboard/", "/dashboard/runs/", "/dashboard/events/", "/dashboard/failed/", "/dashboard/schedules/",
         "/dashboard/workers/"]


def make_run(pipeline="three_stages", status="succeeded", event_type="test.started", *, ago=timedelta(minutes=1),
             payload=None, error="", duration_ms=12.5, trace_id=None) -> Run:
    moment = timezone.now() - ago
    event = Event.objects.create(type=event_type, payload=payload if payload is not None else {"value": 1},
                                 occurred_at=moment, trace_id=trace_id or secrets.token_hex(16))
    return Run.objects.create(event=event, pipeline=pipeline, status=status, created_at=moment, started_at=moment,
                              finished_at=moment + timedelta(milliseconds=duration_ms) if status != "running" else None,
                              duration_ms=duration_ms, error=error)


def shown_runs(response) -> list[str]:
    return re.findall(r'data-run="([0-9a-f-]{36})"', response.content.decode())


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("operator", password="secret-pw", is_staff=True)


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def csrf_client(staff) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    return client


def csrf_token(client: Client) -> str:
    client.get("/dashboard/runs/")
    return client.cookies["csrftoken"].value


# --- who may see the dashboard ---------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("url", PAGES)
def test_anonymous_user_is_redirected_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=" + url


@pytest.mark.django_db
def test_a_run_page_and_its_json_state_need_a_staff_login(client):
    run = make_run()
    for url in (f"/dashboard/runs/{run.id}/", f"/dashboard/runs/{run.id}/status.json"):
        assert client.get(url).status_code == 302


@pytest.mark.django_db
def test_a_logged_in_user_who_is_not_staff_is_sent_to_login(client):
    client.force_login(User.objects.create_user("customer", password="pw"))
    response = client.get("/dashboard/runs/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", PAGES)
def test_staff_see_every_page(staff_client, url):
    response = staff_client.get(url)
    assert response.status_code == 200
    assert b"log out" in response.content


def test_the_root_url_leads_to_the_dashboard(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/dashboard/"


# --- CSRF on every action --------------------------------------------------------------------------

def _actions(run: Run) -> list[tuple[str, dict]]:
    return [
        (f"/dashboard/runs/{run.id}/replay", {}),
        (f"/dashboard/runs/{run.id}/cancel", {}),
        ("/dashboard/failed/replay", {"run_id": [str(run.id)]}),
        ("/dashboard/schedules/tick_every_second/pause", {}),
        ("/dashboard/schedules/tick_every_second/resume", {}),
        ("/dashboard/schedules/tick_every_second/trigger", {}),
    ]


def test_every_action_without_a_csrf_token_is_refused(csrf_client):
    run = make_run(status="failed", error="stage second: ValueError: boom")
    for url, data in _actions(run):
        response = csrf_client.post(url, data)
        assert response.status_code == 403, url
    run.refresh_from_db()
    assert run.status == "failed"


def test_replay_with_the_csrf_token_replays_the_failed_run(csrf_client):
    run = make_run(status="failed", error="stage second: ValueError: boom")
    StageRun.objects.create(run=run, stage="first", status="succeeded", attempts=1, result={"value": 2})
    StageRun.objects.create(run=run, stage="second", status="failed", attempts=1, error="ValueError: boom")
    response = csrf_client.post(f"/dashboard/runs/{run.id}/replay", {"csrfmiddlewaretoken": csrf_token(csrf_client)})
    assert response.status_code == 302 and response["Location"] == f"/dashboard/runs/{run.id}/"
    run.refresh_from_db()
    assert run.status == "running"
    assert StageRun.objects.get(run=run, stage="second").status == "pending"
    assert StageRun.objects.get(run=run, stage="first").status == "succeeded"


def test_actions_are_post_only(staff_client):
    run = make_run(status="failed")
    assert staff_client.get(f"/dashboard/runs/{run.id}/replay").status_code == 405
    assert staff_client.get("/dashboard/failed/replay").status_code == 405


def test_every_form_that_posts_carries_a_csrf_token(staff_client):
    failed = make_run(status="failed", error="stage second: ValueError: boom")
    running = make_run(status="running")
    pages = [f"/dashboard/runs/{failed.id}/", f"/dashboard/runs/{running.id}/", "/dashboard/failed/",
             "/dashboard/schedules/", "/dashboard/"]
    forms = 0
    for url in pages:
        html = staff_client.get(url).content.decode()
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            forms += 1
            assert 'name="csrfmiddlewaretoken"' in form, (url, form[:200])
    assert forms >= 10


def test_a_refused_replay_says_why_on_the_run_page(staff_client):
    run = make_run(status="succeeded")
    response = staff_client.post(f"/dashboard/runs/{run.id}/replay", follow=True)
    assert "Not replayed: run" in response.content.decode()
    assert "only failed or cancelled runs can be replayed" in response.content.decode()


def test_cancel_from_the_run_page_cancels_a_running_run(staff_client):
    run = make_run(status="running")
    StageRun.objects.create(run=run, stage="first", status="pending")
    response = staff_client.post(f"/dashboard/runs/{run.id}/cancel", follow=True)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert StageRun.objects.get(run=run).status == "cancelled"
    assert "Cancelled" in response.content.decode()


def test_bulk_replay_replays_the_selected_failed_runs_and_says_which_were_refused(staff_client):
    failed = [make_run(status="failed", error="x") for _ in range(2)]
    done = make_run(status="succeeded")
    response = staff_client.post("/dashboard/failed/replay",
                                 {"run_id": [str(r.id) for r in failed] + [str(done.id)], "next": "/dashboard/failed/"},
                                 follow=True)
    assert {Run.objects.get(id=r.id).status for r in failed} == {"running"}
    page = response.content.decode()
    assert "Replaying 2 runs." in page
    assert f"run {done.id} is succeeded" in page


def test_bulk_replay_with_nothing_selected_asks_for_a_selection(staff_client):
    response = staff_client.post("/dashboard/failed/replay", {}, follow=True)
    assert "Select at least one run" in response.content.decode()


# --- the runs list: filters, search, pagination -----------------------------------------------------

def test_runs_are_filtered_by_pipeline_status_event_type_and_time(staff_client):
    ok = make_run("three_stages", "succeeded", "test.started")
    failed = make_run("three_stages", "failed", "test.started")
    other = make_run("diamond", "failed", "test.diamond")
    old = make_run("three_stages", "failed", "test.started", ago=timedelta(days=3))

    def ids(query: str) -> set[str]:
        response = staff_client.get("/dashboard/runs/?" + query)
        assert response.status_code == 200
        return set(shown_runs(response))

    assert ids("") == {str(r.id) for r in (ok, failed, other, old)}
    assert ids("pipeline=three_stages") == {str(ok.id), str(failed.id), str(old.id)}
    assert ids("status=failed") == {str(failed.id), str(other.id), str(old.id)}
    assert ids("pipeline=three_stages&status=failed") == {str(failed.id), str(old.id)}
    assert ids("event_type=test.diamond") == {str(other.id)}
    assert ids("range=24h&status=failed") == {str(failed.id), str(other.id)}
    since = (timezone.now() - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")
    until = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    assert ids(f"since={since}&until={until}") == {str(old.id)}


def test_a_run_is_found_by_its_run_id_event_id_or_trace_id(staff_client):
    target = make_run(trace_id="ab" * 16)
    make_run()
    for value in (str(target.id), str(target.event_id), "ab" * 16, f"00-{'ab' * 16}-{'cd' * 8}-01"):
        assert shown_runs(staff_client.get("/dashboard/runs/", {"q": value})) == [str(target.id)], value


def test_a_bad_filter_is_explained_on_the_page_not_a_server_error(staff_client):
    make_run()
    response = staff_client.get("/dashboard/runs/?status=exploded&q=not-an-id&since=yesterday")
    page = response.content.decode()
    assert response.status_code == 200
    assert "parameter &#x27;status&#x27; must be one of" in page
    assert "search takes a run id, an event id or a trace id" in page
    assert "parameter &#x27;since&#x27; must be an ISO 8601 date-time" in page


def test_runs_are_paginated_newest_first_without_gaps_or_repeats(staff_client):
    runs = [make_run(ago=timedelta(seconds=i)) for i in range(121)]
    # Runs created at the very same moment on both sides of a page boundary must all appear, once.
    Run.objects.filter(id__in=[runs[50].id, runs[51].id]).update(created_at=runs[49].created_at)
    expected = [str(r.id) for r in Run.objects.order_by("-created_at", "-id")]
    seen, url, pages = [], "/dashboard/runs/", []
    while url:
        response = staff_client.get(url)
        pages.append(shown_runs(response))
        seen.extend(pages[-1])
        match = re.search(r'href="(\?[^"]*before=[^"]+)" rel="next"', response.content.decode())
        url = "/dashboard/runs/" + match.group(1).replace("&amp;", "&") if match else None
    assert [len(p) for p in pages] == [50, 50, 21]
    assert seen == expected
    # ...and back: "newer" from the second page is the first page.
    second = staff_client.get("/dashboard/runs/?before=" + re.search(
        r'before=([^"&]+)', staff_client.get("/dashboard/runs/").content.decode()).group(1))
    newer = re.search(r'href="(\?[^"]*after=[^"]+)" rel="prev"', second.content.decode()).group(1).replace("&amp;", "&")
    assert shown_runs(staff_client.get("/dashboard/runs/" + newer)) == pages[0]


def test_the_count_above_the_list_is_capped(staff_client, monkeypatch):
    from web import run_queries as queries

    monkeypatch.setattr(queries, "COUNT_CAP", 5)
    monkeypatch.setattr(queries.count_capped, "__defaults__", (5,))
    for _ in range(7):
        make_run()
    assert "5+ runs" in staff_client.get("/dashboard/runs/").content.decode()
    assert staff_client.get("/dashboard/runs/?partial=1")["X-Run-Count"] == "5+ runs"


def test_the_live_list_fragment_holds_only_the_rows(staff_client):
    run = make_run()
    response = staff_client.get("/dashboard/runs/?partial=1")
    assert shown_runs(response) == [str(run.id)]
    assert b"<html" not in response.content


# --- the run page ---------------------------------------------------------------------------------

def test_the_run_page_shows_graph_waterfall_errors_tracebacks_and_the_redacted_payload(staff_client, settings, tmp_path):
    settings.PIPELINE_LOG_DIR = str(tmp_path)
    run = make_run("diamond", "failed", "test.diamond", payload={"n": 3, "card_number": "4242424242424242",
                                                                 "customer": {"password": "hunter2"}},
                   error="stage left: ValueError: left is broken")
    start = run.started_at
    StageRun.objects.create(run=run, stage="split", status="succeeded", attempts=1, started_at=start,
                            finished_at=start + timedelta(milliseconds=40), duration_ms=40, result={"n": 3})
    StageRun.objects.create(
        run=run, stage="left", status="failed", attempts=2, started_at=start + timedelta(milliseconds=300),
        finished_at=start + timedelta(milliseconds=320), duration_ms=20, error="ValueError: left is broken",
        traceback="Traceback (most recent call last):\n  File \"pipelines.py\", line 9, in left\nValueError: left is broken",
        attempt_log=[
            {"attempt": 1, "error_type": "ValueError", "error": "ValueError: left is broken",
             "traceback": "Traceback: first attempt", "finished_at": (start + timedelta(milliseconds=90)).isoformat(),
             "duration_ms": 30},
            {"attempt": 2, "error_type": "ValueError", "error": "ValueError: left is broken",
             "traceback": "Traceback: second attempt", "finished_at": (start + timedelta(milliseconds=320)).isoformat(),
             "duration_ms": 20},
        ])
    StageRun.objects.create(run=run, stage="right", status="succeeded", attempts=1,
                            started_at=start + timedelta(milliseconds=50), finished_at=start + timedelta(milliseconds=150),
                            duration_ms=100, result={"right": 9})
    page = staff_client.get(f"/dashboard/runs/{run.id}/").content.decode()

    # The graph: every stage of the pipeline, coloured by its state; join never started.
    nodes = dict(re.findall(r'data-stage="(\w+)" data-state="(\w+)"', page))
    assert nodes == {"split": "succeeded", "left": "failed", "right": "succeeded", "join": "not_started"}
    assert page.count('class="edge') == 4  # split->left, split->right, left->join, right->join
    # The waterfall: one bar per attempt, the failed ones included.
    bars = re.findall(r'class="wf-row" data-stage="(\w+)" data-outcome="(\w+)"', page)
    assert sorted(bars) == sorted([("split", "succeeded"), ("left", "failed"), ("left", "failed"),
                                   ("right", "succeeded")])
    # Errors and every attempt's traceback.
    assert "stage left: ValueError: left is broken" in page
    assert "Traceback: first attempt" in page and "Traceback: second attempt" in page
    # The payload, secrets masked.
    assert "4242424242424242" not in page and "hunter2" not in page
    assert "[redacted]" in page and "&quot;n&quot;: 3" in page
    # Failed: replay buttons, no cancel.
    assert 'id="replay"' in page and 'id="cancel"' not in page


def test_the_run_page_shows_the_run_s_log_lines_and_only_them(staff_client, settings, tmp_path):
    settings.PIPELINE_LOG_DIR = str(tmp_path)
    run, other = make_run(), make_run()
    lines = [
        {"event": "run.started", "run_id": str(run.id), "timestamp": "2026-01-01T00:00:01Z", "level": "info", "process": "worker"},
        {"event": "stage.succeeded", "run_id": str(other.id), "timestamp": "2026-01-01T00:00:02Z", "level": "info"},
        # Another run's line that mentions this run: not one of this run's lines.
        {"event": "run.replayed", "run_id": str(other.id), "replay_of": str(run.id), "timestamp": "2026-01-01T00:00:02Z",
         "level": "info"},
        {"event": "stage.retrying", "run_id": str(run.id), "stage": "second", "attempt": 1, "retry_in_ms": 250,
         "timestamp": "2026-01-01T00:00:03Z", "level": "warning", "process": "worker"},
    ]
    (tmp_path / "worker.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\nnot json " + str(run.id) + "\n")
    (tmp_path / "web.jsonl").write_text(json.dumps({"event": "event.emitted", "run_id": str(run.id),
                                                     "timestamp": "2026-01-01T00:00:00Z", "level": "info",
                                                     "process": "web"}) + "\n")
    page = staff_client.get(f"/dashboard/runs/{run.id}/").content.decode()
    table = page[page.index('id="logs"'):]
    assert re.findall(r'<tr class="lvl-\w+"><td>[^<]*</td><td>[^<]*</td><td>([^<]+)</td>', table) == [
        "event.emitted", "run.started", "stage.retrying"]
    assert "retry_in_ms=250" in table


def test_log_lines_are_capped_and_a_missing_log_dir_is_said_plainly(tmp_path):
    from web.dashboard.logs import run_log_lines

    run_id = str(uuid.uuid4())
    (tmp_path / "worker.jsonl").write_text("".join(
        json.dumps({"event": "x", "run_id": run_id, "timestamp": f"2026-01-01T00:00:{i:02d}Z"}) + "\n" for i in range(60)))
    result = run_log_lines(run_id, log_dir=str(tmp_path), cap=10)
    assert len(result.lines) == 10 and result.truncated
    assert result.lines[-1]["timestamp"] == "2026-01-01T00:00:59Z"
    assert "no log files" in run_log_lines(run_id, log_dir=str(tmp_path / "nowhere")).problem


def test_an_unknown_run_is_a_404(staff_client):
    assert staff_client.get(f"/dashboard/runs/{uuid.uuid4()}/").status_code == 404
    assert staff_client.get("/dashboard/runs/not-a-uuid/").status_code == 404


def test_the_run_state_endpoint_changes_its_fingerprint_when_a_stage_moves(staff_client):
    run = make_run(status="running")
    StageRun.objects.create(run=run, stage="first", status="running", attempts=1)
    before = staff_client.get(f"/dashboard/runs/{run.id}/status.json").json()
    assert before["active"] and before["stages"] == {"first": "running"}
    StageRun.objects.filter(run=run).update(status="succeeded")
    after = staff_client.get(f"/dashboard/runs/{run.id}/status.json").json()
    assert after["fingerprint"] != before["fingerprint"]


# --- events and overview --------------------------------------------------------------------------

def test_the_events_page_lists_each_event_with_the_runs_it_started(staff_client):
    run = make_run("diamond", "failed", "test.diamond")
    page = staff_client.get("/dashboard/events/").content.decode()
    row = page[page.index(f'data-event="{run.event_id}"'):]
    assert f'/dashboard/runs/{run.id}/' in row[:2000] and "s-failed" in row[:2000]
    filtered = staff_client.get("/dashboard/events/?type=test.started").content.decode()
    assert f'data-event="{run.event_id}"' not in filtered


def test_the_overview_counts_runs_and_computes_stage_latency(staff_client, settings):
    settings.PIPELINE_BROKER_URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens there
    for status in ["succeeded"] * 3 + ["failed"]:
        run = make_run(status=status)
    for i, ms in enumerate([10.0, 20.0, 30.0, 40.0, 1000.0]):
        StageRun.objects.create(run=make_run(), stage=f"first", status="succeeded", duration_ms=ms)
    make_run(status="failed", ago=timedelta(hours=3))  # outside the last hour
    response = staff_client.get("/dashboard/")
    page = response.content.decode()
    data = json.loads(re.search(r'<script id="chart-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert sum(data["series"]["succeeded"]) == 8 and sum(data["series"]["failed"]) == 1
    assert data["latency"]["labels"] == ["three_stages.first"]
    assert data["latency"]["p50"] == [30.0] and data["latency"]["p95"] == [1000.0]
    assert "cannot reach RabbitMQ at amqp://127.0.0.1:1/" in page
    day = staff_client.get("/dashboard/?window=day").content.decode()
    day_data = json.loads(re.search(r'<script id="chart-data" type="application/json">(.*?)</script>', day, re.S).group(1))
    assert sum(day_data["series"]["failed"]) == 2


# --- workers --------------------------------------------------------------------------------------

def test_a_worker_silent_past_the_threshold_shows_as_offline(staff_client, settings):
    settings.PIPELINE_WORKER_OFFLINE_AFTER_SECONDS = 20
    now = timezone.now()
    for pid, seen, stopped in ((101, now, None), (102, now - timedelta(seconds=45), None),
                               (103, now - timedelta(seconds=45), now - timedelta(seconds=45))):
        WorkerHeartbeat.objects.create(host="h1", pid=pid, queues=["pipeline"], in_flight=2, started_at=now - timedelta(hours=1),
                                       last_seen=seen, stopped_at=stopped)
    page = staff_client.get("/dashboard/workers/").content.decode()
    states = dict(re.findall(r'data-worker="h1:(\d+)" data-state="(\w+)"', page))
    assert states == {"101": "online", "102": "offline", "103": "stopped"}
    assert '<b id="stat-workers">1</b>' in staff_client.get("/dashboard/").content.decode()


def test_the_heartbeat_middleware_reports_while_the_worker_runs_and_marks_it_stopped(transactional_db):
    import dramatiq

    from pipeline.middleware import Heartbeat

    heartbeat = Heartbeat(interval=0.05)
    heartbeat.after_worker_boot(dramatiq.get_broker(), SimpleNamespace(consumer_whitelist={"pipeline", "pipeline.DQ"}))
    try:
        row = wait_for(lambda: WorkerHeartbeat.objects.filter(id=heartbeat.worker_id).first(), 30, "a heartbeat row")
        assert row.queues == ["pipeline"] and row.stopped_at is None
        first_seen = row.last_seen
        message = SimpleNamespace(message_id="m-1", actor_name="three_stages.first")
        heartbeat.before_process_message(None, message)
        wait_for(lambda: WorkerHeartbeat.objects.filter(id=heartbeat.worker_id, in_flight=1,
                                                        current=["three_stages.first"]).exists(), 30, "one stage in flight")
        heartbeat.after_process_message(None, message)
        row = wait_for(lambda: WorkerHeartbeat.objects.filter(id=heartbeat.worker_id, in_flight=0, processed=1).first(),
                       30, "the stage done")
        assert row.last_seen > first_seen
    finally:
        heartbeat.before_worker_shutdown(None, None)
        heartbeat.after_worker_shutdown(None, None)
    assert WorkerHeartbeat.objects.get(id=heartbeat.worker_id).stopped_at is not None
    assert not any(t.name == "pipeline-heartbeat" and t.is_alive() for t in threading.enumerate())


# --- schedules ------------------------------------------------------------------------------------

def test_a_schedule_is_paused_and_resumed_from_the_schedules_page(staff_client):
    from schedules.models import ScheduleRecord

    staff_client.get("/dashboard/schedules/")
    response = staff_client.post("/dashboard/schedules/tick_every_second/pause", follow=True)
    assert ScheduleRecord.objects.get(name="tick_every_second").paused
    page = response.content.decode()
    row = page[page.index('data-schedule="tick_every_second"'):]
    assert re.search(r'data-state>paused<', row[:1500])
    staff_client.post("/dashboard/schedules/tick_every_second/resume")
    assert not ScheduleRecord.objects.get(name="tick_every_second").paused


def test_an_unknown_schedule_action_is_a_404(staff_client):
    staff_client.get("/dashboard/schedules/")
    assert staff_client.post("/dashboard/schedules/tick_every_second/explode").status_code == 404
    assert staff_client.post("/dashboard/schedules/no_such_schedule/pause").status_code == 404


# --- the JSON API ---------------------------------------------------------------------------------

def test_listing_runs_without_a_token_is_a_401_in_json(client, db):
    response = client.get("/api/runs")
    assert response.status_code == 401
    assert response.json()["error"].startswith("authentication required")


def test_the_api_lists_runs_filtered_and_a_page_at_a_time(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    runs = [make_run(status="failed", ago=timedelta(seconds=i)) for i in range(5)]
    make_run(status="succeeded")
    body = client.get("/api/runs?status=failed&limit=2", **auth).json()
    assert [r["run_id"] for r in body["runs"]] == [str(runs[0].id), str(runs[1].id)]
    assert body["runs"][0]["event_type"] == "test.started" and body["filters"] == {"status": "failed"}
    rest = client.get(f"/api/runs?status=failed&limit=10&cursor={body['next_cursor']}", **auth).json()
    assert [r["run_id"] for r in rest["runs"]] == [str(r.id) for r in runs[2:]]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("query, field, message", [
    ("status=exploded", "status", "parameter 'status' must be one of pending, running, succeeded, failed, cancelled"),
    ("limit=500", "limit", "parameter 'limit' must be an integer from 1 to 200"),
    ("cursor=garbage", "cursor", "parameter 'cursor' is not a cursor this list returned"),
    ("since=last-tuesday", "since", "parameter 'since' must be an ISO 8601 date-time"),
    ("colour=red", "colour", "unknown query parameter(s): colour"),
])
def test_a_bad_runs_query_is_a_400_naming_the_parameter(client, api_token, query, field, message):
    response = client.get(f"/api/runs?{query}", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 400
    assert response.json()["field"] == field and response.json()["error"].startswith(message)


def _api_routes() -> set[str]:
    routes: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                routes.add("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", prefix + str(pattern.pattern)))

    walk(get_resolver().url_patterns, "")
    return {r for r in routes if r.startswith("/api/")}


def test_the_openapi_schema_is_public_and_describes_every_api_route(client, db):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    documented = set(schema["paths"])
    routes = _api_routes()
    # A route with an {action} placeholder is documented action by action.
    concrete = {r for r in routes if "{action}" not in r}
    assert concrete <= documented, concrete - documented
    for route in routes - concrete:
        assert any(re.fullmatch(re.escape(route).replace(r"\{action\}", r"\w+"), d) for d in documented), route
    for path in ("/api/schedules", "/api/schedules/{name}/pause", "/api/schedules/{name}/resume",
                 "/api/schedules/{name}/trigger", "/api/runs", "/api/runs/{run_id}/replay"):
        assert path in documented
    assert set(schema["paths"]["/api/schedules"]) == {"get", "post"}
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
