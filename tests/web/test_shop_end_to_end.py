"""The demo, end to end over HTTP: an order placed on the live server is fulfilled by the worker."""
import pytest
import requests

from tests.conftest import http_ok, read_log_lines, wait_for
from web.shop.models import Order

pytestmark = pytest.mark.broker

ORDER = {"customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}], "total_cents": 4200}


def test_an_order_placed_over_http_is_fulfilled_and_visible_through_the_api(live_worker, live_server, api_token):
    response = requests.post(f"{live_server.url}/shop/orders", json=ORDER, timeout=10)
    assert response.status_code == 201
    event_id, order_id, order_url = response.json()["event_id"], response.json()["order_id"], response.json()["order_url"]
    auth = {"Authorization": f"Bearer {api_token}"}

    event = requests.get(f"{live_server.url}/api/events/{event_id}", headers=auth, timeout=10).json()
    run_id = event["runs"][0]["run_id"]

    def run_finished():
        run = requests.get(f"{live_server.url}/api/runs/{run_id}", headers=auth, timeout=10).json()
        return run if run["status"] in ("succeeded", "failed") else None

    run = wait_for(run_finished, 30, "the fulfil_order run to finish")
    assert run["status"] == "succeeded"
    assert [s["stage"] for s in run["stages"]] == ["reserve_stock", "charge_payment", "ship_order"]
    assert Order.objects.get(pk=order_id).status == "fulfilled"
    page = requests.get(f"{live_server.url}{order_url}", timeout=10)
    assert page.status_code == 200 and "fulfilled" in page.text

    # The outcome is committed before its line is written: wait for all three lines, not the first.
    def stage_lines():
        lines = [l for l in read_log_lines() if l.get("run_id") == run_id and l["event"] == "stage.succeeded"]
        return lines if len({l["stage"] for l in lines}) == 3 else None

    lines = wait_for(stage_lines, 30, "the three stage lines in the worker's log")
    assert {l["stage"] for l in lines} == {"reserve_stock", "charge_payment", "ship_order"}


def test_the_development_web_server_writes_its_lines_to_web_jsonl(live_worker, test_database_url):
    """`make run` serves with `manage.py runserver`: its transitions must reach var/log/web.jsonl
    (Django re-runs its logging set-up there, which once closed our log file under us)."""
    import socket
    import sys

    from tests.conftest import ManagedProcess, child_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = ManagedProcess("web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                         child_env(test_database_url, PIPELINE_PROCESS="web"))
    try:
        # Ready first, then one order (a POST as the probe could place its order and still time out).
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 90, "the development server to answer")
        response = requests.post(f"http://127.0.0.1:{port}/shop/orders", json=ORDER, timeout=60)
        assert response.status_code == 201
        event_id = response.json()["event_id"]
        lines = wait_for(lambda: [l for l in read_log_lines("web.jsonl") if l.get("event_id") == event_id], 30,
                         "the web process's lines")
    finally:
        web.stop()
    assert {l["event"] for l in lines} >= {"event.emitted", "event.published"}
    assert all(l["process"] == "web" for l in lines)
    assert "Logging error" not in web.output()
