"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against the
live server and a real worker: log in, watch a run succeed, read a failed run's error, replay it
and watch it succeed, pause a schedule. Every page visited is saved as a screenshot under
<var>/screenshots/ (a test artifact, not committed)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.conftest import wait_for

pytestmark = pytest.mark.broker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
SHOTS = Path(settings.VAR_DIR) / "screenshots"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser_context():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (infra/test.sh installs it when run as root)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still
    # plain synchronous calls, so let Django allow them.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="dash-chromium-")
    playwright = sync_playwright().start()
    context = playwright.chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    # expect() has its own default (5 s), which set_default_timeout does not change: the waits on a
    # run reaching its end (a worker, the broker, a page refresh) get the same bound as actions.
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()
        playwright.stop()
        shutil.rmtree(profile, ignore_errors=True)
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser_context):
    browser_context.clear_cookies()
    page = browser_context.new_page()
    yield page
    page.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def operator(transactional_db):
    from django.contrib.auth.models import User

    return User.objects.create_user("operator", password="operator-pw", is_staff=True)


def log_in(page, base_url: str) -> None:
    page.goto(f"{base_url}/dashboard/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/dashboard/")


def test_anonymous_users_are_sent_to_login_and_api_calls_without_a_token_get_401(live_server, page, transactional_db):
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/dashboard/runs/")
    assert page.url == f"{live_server.url}/admin/login/?next=/dashboard/runs/"
    expect(page.locator("#id_username")).to_be_visible()
    shot(page, "01-login")
    for method, path in (("get", "/api/runs"), ("get", "/api/openapi.json"), ("post", "/api/events")):
        response = getattr(page.request, method)(f"{live_server.url}{path}")
        if path == "/api/openapi.json":
            assert response.status == 200  # documentation is public
        else:
            assert response.status == 401, path
            assert response.json()["error"].startswith("authentication required")


def test_an_operator_logs_in_and_sees_a_run_move_to_succeeded(live_worker, live_server, page, operator, api_token):
    from playwright.sync_api import expect

    log_in(page, live_server.url)
    # The overview: charts drawn, the stage queue read from RabbitMQ with the worker consuming it.
    # (The table is drawn by the server from one broker check with a 2 s bound, which a loaded broker
    # may miss: the page is loaded again until a check answered.)
    consumers = page.locator("#queues tr[data-queue=pipeline] [data-consumers]")

    def consumer_shown() -> bool:
        if consumers.count() and re.fullmatch(r"[1-9]\d*", consumers.inner_text()):
            return True
        page.reload()
        return False

    wait_for(consumer_shown, 60, "the overview to show the pipeline queue's consumer", interval=1)
    assert page.evaluate("() => !!Chart.getChart(document.getElementById('chart-runs'))")

    # The runs list is open and live when the event arrives.
    page.goto(f"{live_server.url}/dashboard/runs/?pipeline=three_stages")
    expect(page.locator("tbody tr[data-run]")).to_have_count(0)
    auth = {"Authorization": f"Bearer {api_token}"}
    posted = requests.post(f"{live_server.url}/api/events", json={"type": "test.started", "payload": {"value": 4}},
                           headers=auth, timeout=10)
    assert posted.status_code == 202
    event = requests.get(f"{live_server.url}/api/events/{posted.json()['event_id']}", headers=auth, timeout=10).json()
    run_id = event["runs"][0]["run_id"]
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row.locator("[data-status]")).to_have_text("succeeded")  # appeared and finished without a reload
    expect(page.locator("#run-count")).to_have_text("1 run")
    shot(page, "03-runs")

    row.locator("a").first.click()
    page.wait_for_url(f"{live_server.url}/dashboard/runs/{run_id}/")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    for stage in ("first", "second", "third"):
        expect(page.locator(f"#dag g[data-stage={stage}]")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#waterfall .wf-row")).to_have_count(3)
    expect(page.locator("#logs")).to_contain_text("run.succeeded")
    shot(page, "04-run-succeeded")

    page.goto(f"{live_server.url}/dashboard/events/")
    expect(page.locator(f"tr[data-event='{event['event_id']}']")).to_contain_text("three_stages")
    shot(page, "05-events")

    # Each worker process reports a heartbeat (the table is emptied between tests: wait for the next beat).
    def workers_online():
        page.goto(f"{live_server.url}/dashboard/workers/")
        return page.locator("tr[data-state=online]").count() >= 2

    wait_for(workers_online, 30, "two worker processes online", interval=1)
    expect(page.locator("tr[data-state=online]").first).to_contain_text("pipeline")
    shot(page, "06-workers")

    # Back on the overview, the run is counted and its stages' latency charted.
    page.goto(f"{live_server.url}/dashboard/")
    expect(page.locator("#stat-runs")).to_have_text("1")
    expect(page.locator("#pipelines")).to_contain_text("three_stages")
    assert page.evaluate("() => Chart.getChart(document.getElementById('chart-latency')).data.labels.length") == 3
    shot(page, "02-overview")


def test_a_failed_run_shows_its_error_and_succeeds_when_replayed(live_worker, live_server, page, operator, api_token):
    from playwright.sync_api import expect

    from pipeline.models import Run
    from tests.testapp.models import Switch

    Switch.objects.create(name="broken")
    auth = {"Authorization": f"Bearer {api_token}"}
    posted = requests.post(f"{live_server.url}/api/events", json={"type": "test.fixable", "payload": {}},
                           headers=auth, timeout=10)
    event = requests.get(f"{live_server.url}/api/events/{posted.json()['event_id']}", headers=auth, timeout=10).json()
    run_id = event["runs"][0]["run_id"]
    wait_for(lambda: Run.objects.filter(id=run_id, status="failed").exists(), 30, "the fixable run to fail")

    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/dashboard/failed/")
    expect(page.locator(f"tr[data-run='{run_id}']")).to_contain_text("ValueError: dependency is broken")
    shot(page, "07-failed-runs")

    page.locator(f"tr[data-run='{run_id}'] a").first.click()
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#run-error")).to_have_text("stage breakable: ValueError: dependency is broken")
    expect(page.locator("#dag g[data-stage=breakable]")).to_have_attribute("data-state", "failed")
    expect(page.locator("#dag g[data-stage=wrap_up]")).to_have_attribute("data-state", "not_started")
    traceback = page.locator("tr[data-stage-row=breakable] details[open] pre.traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("ValueError: dependency is broken")
    expect(page.locator("#waterfall .wf-row[data-outcome=failed]")).to_have_count(2)  # both attempts
    shot(page, "08-run-failed")

    Switch.objects.filter(name="broken").delete()
    page.click("#replay")
    page.wait_for_url(f"{live_server.url}/dashboard/runs/{run_id}/")
    expect(page.locator(".messages")).to_contain_text("Replaying")
    # The page follows the run by itself until it has finished.
    expect(page.locator("#run-status")).to_have_text("succeeded")
    for stage in ("setup", "breakable", "wrap_up"):
        expect(page.locator(f"#dag g[data-stage={stage}]")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#waterfall .wf-row[data-stage=breakable]")).to_have_count(3)  # two failures, one success
    shot(page, "09-run-replayed")
    assert Run.objects.get(id=run_id).status == "succeeded"


def test_an_operator_pauses_a_schedule_and_sees_it_paused(live_server, page, operator):
    from playwright.sync_api import expect

    from schedules.models import ScheduleRecord

    log_in(page, live_server.url)
    page.goto(f"{live_server.url}/dashboard/schedules/")
    row = page.locator("tr[data-schedule=tick_every_second]")
    expect(row.locator("[data-state]")).to_have_text("active")
    row.locator("button[data-action=pause]").click()
    row = page.locator("tr[data-schedule=tick_every_second]")
    expect(row.locator("[data-state]")).to_have_text("paused")
    expect(row.locator("button[data-action=resume]")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("tick_every_second: paused.")
    shot(page, "10-schedules")
    assert ScheduleRecord.objects.get(name="tick_every_second").paused
