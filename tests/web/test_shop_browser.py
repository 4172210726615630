"""The demo shop in a real browser (Debian's headless Chromium driven by Playwright): an order
placed through the shop's form is followed live on its page, without a reload, until it is
fulfilled, or failed with the reason; a browser without EventSource, or refused a stream, follows
it by polling."""
from __future__ import annotations

import pytest

from tests.web.test_dashboard_browser import browser_context, page, shot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.broker


def place_order_through_the_form(page, base_url: str, email: str = "grace@example.com", total: int = 5900) -> None:
    page.goto(f"{base_url}/shop/")
    page.fill("#customer_email", email)
    page.fill("#sku", "LAMP-7")
    page.fill("#quantity", "2")
    page.fill("#total_cents", str(total))
    page.click("#place-order")


@pytest.fixture
def slow_start(monkeypatch):
    """Publishes a new event's first stages 1.5 s after its commit (the live server runs in this
    process), so the order page is surely open, showing "placed", before its fulfilment starts."""
    import threading

    from pipeline import _events as events

    original = events._publish_after_commit
    timers = []

    def later(*args):
        timer = threading.Timer(1.5, original, args)
        timers.append(timer)
        timer.start()

    monkeypatch.setattr(events, "_publish_after_commit", later)
    yield
    for timer in timers:
        timer.join(10)


def test_an_order_placed_on_the_shop_page_is_seen_reaching_fulfilled_without_a_reload(
    live_worker, live_server, page, slow_start
):
    from playwright.sync_api import expect

    from web.shop.models import Order

    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    place_order_through_the_form(page, live_server.url)
    page.wait_for_url(f"{live_server.url}/shop/orders/*")
    order = Order.objects.get(customer_email="grace@example.com")
    assert page.url == f"{live_server.url}/shop/orders/{order.public_token}"  # its unguessable link
    expect(page.locator("#customer-email")).to_have_text("g***@example.com")
    assert "grace@example.com" not in page.content()
    assert order.items == [{"sku": "LAMP-7", "quantity": 2}] and order.total_cents == 5900
    expect(page.locator("#order-status")).to_have_text("placed")  # as rendered: nothing has run yet
    expect(page.locator("#live-mode")).to_have_text("live")  # following the order over EventSource
    page.evaluate("() => { window.__sameDocument = true; }")
    loads = len(navigations)

    expect(page.locator("#order-status")).to_have_text("fulfilled")
    for stage in ("reserve_stock", "charge_payment", "ship_order"):
        expect(page.locator(f"tr[data-stage={stage}] [data-status]")).to_have_text("succeeded")
    expect(page.locator("section[data-run] [data-run-status]")).to_have_text("succeeded")
    expect(page.locator("#live-mode")).to_have_text("done")
    assert page.evaluate("() => window.__sameDocument === true")  # the same document: no reload happened
    assert len(navigations) == loads
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    shot(page, "shop-01-order-fulfilled-live")


def test_without_event_source_the_order_page_polls_until_fulfilled(live_worker, live_server, page, slow_start):
    from playwright.sync_api import expect

    page.add_init_script("delete window.EventSource;")
    place_order_through_the_form(page, live_server.url)
    page.wait_for_url(f"{live_server.url}/shop/orders/*")
    expect(page.locator("#order-status")).to_have_text("placed")
    expect(page.locator("#live-mode")).to_have_text("polling")
    page.evaluate("() => { window.__sameDocument = true; }")
    expect(page.locator("#order-status")).to_have_text("fulfilled")
    expect(page.locator("tr[data-stage=ship_order] [data-status]")).to_have_text("succeeded")
    assert page.evaluate("() => window.__sameDocument === true")
    shot(page, "shop-02-order-fulfilled-polling")


def test_the_shop_form_shows_a_clear_error_for_a_bad_email(live_server, page, transactional_db):
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/shop/")
    page.fill("#customer_email", "grace@example.com")
    page.evaluate("() => { const f = document.getElementById('customer_email'); f.type = 'text'; f.value = 'not-an-email'; }")
    page.click("#place-order")
    expect(page.locator("#form-error")).to_contain_text("customer_email")
    assert page.url == f"{live_server.url}/shop/"


def test_an_order_whose_payment_exhausts_its_retries_is_seen_failed_with_its_reason_without_a_reload(
    live_worker, live_server, page, slow_start
):
    """SHOP_FAILING_TOTAL_CENTS: every `charge_payment` attempt of such an order fails, the run
    fails after the last retry, and the shop's `order_failed` pipeline sets the order `failed`."""
    from django.conf import settings
    from playwright.sync_api import expect

    from pipeline.models import Run
    from web.shop.models import Order

    place_order_through_the_form(page, live_server.url, "ada@example.com", settings.SHOP_FAILING_TOTAL_CENTS)
    page.wait_for_url(f"{live_server.url}/shop/orders/*")
    expect(page.locator("#order-status")).to_have_text("placed")
    expect(page.locator("#live-mode")).to_have_text("live")
    expect(page.locator("#failure-reason")).to_be_hidden()
    page.evaluate("() => { window.__sameDocument = true; }")

    expect(page.locator("#order-status")).to_have_text("failed", timeout=90_000)
    expect(page.locator("#failure-reason")).to_be_visible()
    expect(page.locator("#failure-reason")).to_contain_text("We could not take your payment")
    expect(page.locator("#failure-reason")).to_contain_text("You have not been charged.")
    expect(page.locator("tr[data-stage=charge_payment] [data-status]")).to_have_text("failed")
    expect(page.locator("tr[data-stage=charge_payment] [data-attempts]")).to_have_text("6")  # 1 + 5 retries
    expect(page.locator("section[data-run] [data-run-status]")).to_have_text("failed")
    expect(page.locator("#live-mode")).to_have_text("done")
    assert page.evaluate("() => window.__sameDocument === true")  # no reload
    shot(page, "shop-03-order-failed-live")

    order = Order.objects.get(customer_email="ada@example.com")
    assert order.status == "failed" and order.failure_reason.startswith("We could not take your payment")
    assert Run.objects.get(event_id=order.event_id, pipeline="fulfil_order").status == "failed"
    page.reload()  # and as rendered afterwards
    expect(page.locator("#failure-reason")).to_contain_text("We could not take your payment")
    expect(page.locator("#live-mode")).to_have_text("done")


def test_a_page_refused_a_stream_follows_its_order_by_polling(live_worker, live_server, page, slow_start, settings):
    """Beyond the open-stream limits the server answers 429 (stream_limits); the page polls instead."""
    from playwright.sync_api import expect

    from web.api import stream_limits

    settings.PIPELINE_SSE_MAX_STREAMS_PER_CLIENT = 1
    held = stream_limits.acquire(type("R", (), {"META": {"REMOTE_ADDR": "127.0.0.1"}})())  # this client's one stream
    try:
        place_order_through_the_form(page, live_server.url)
        page.wait_for_url(f"{live_server.url}/shop/orders/*")
        expect(page.locator("#live-mode")).to_have_text("polling")
        expect(page.locator("#order-status")).to_have_text("fulfilled")
    finally:
        held.release()
