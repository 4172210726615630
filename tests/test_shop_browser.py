"""The demo shop in a real browser (Debian's headless Chromium driven by Playwright): an order
placed through the shop's form is followed live on its page, without a reload, until it is
fulfilled; a browser without EventSource follows it by polling."""
from __future__ import annotations

import pytest

from tests.test_dashboard_browser import browser_context, page, shot  # noqa: F401  (fixtures)

pytestmark = pytest.mark.broker


def place_order_through_the_form(page, base_url: str) -> None:
    page.goto(f"{base_url}/shop/")
    page.fill("#customer_email", "grace@example.com")
    page.fill("#sku", "LAMP-7")
    page.fill("#quantity", "2")
    page.fill("#total_cents", "5900")
    page.click("#place-order")


@pytest.fixture
def slow_start(monkeypatch):
    """Publishes a new event's first stages 1.5 s after its commit (the live server runs in this
    process), so the order page is surely open, showing "placed", before its fulfilment starts."""
    import threading

    from pipeline import events

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
