"""The shop's public order pages (issue 15): reached only by an unguessable link, never by the
order's sequential id; the email shown masked; open event streams bounded per client and per web
process; and an anonymous request's `traceparent` kept as a link, not adopted as its trace."""
from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from pipeline.models import Event
from web.api import stream_limits
from web.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _orders_go_to_the_in_process_broker(pipelines):
    """What an order emits is published to the in-process broker (pipeline.testing), not to a
    RabbitMQ: these tests read the pages and the event, not the fulfilment."""
    return pipelines

ORDER = {"customer_email": "ada.lovelace@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}], "total_cents": 4200}
RECEIVED = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{RECEIVED}-b7ad6b7169203331-01"


def place(client, **headers) -> dict:
    response = client.post("/shop/orders", json.dumps(ORDER), content_type="application/json", **headers)
    assert response.status_code == 201, response.content
    return response.json()


def test_an_order_page_is_reached_by_its_unguessable_link_and_not_by_its_id(client):
    first, second = place(client), place(client)
    tokens = [Order.objects.get(pk=o["order_id"]).public_token for o in (first, second)]
    assert first["order_url"] == f"/shop/orders/{tokens[0]}"
    assert all(len(t) >= 22 for t in tokens) and tokens[0] != tokens[1]
    for suffix in ("", ".json"):
        assert client.get(f"{first['order_url']}{suffix}").status_code == 200
        for guess in (first["order_id"], second["order_id"], "1", tokens[0][:-1] + ("A" if tokens[0][-1] != "A" else "B")):
            assert client.get(f"/shop/orders/{guess}{suffix}").status_code == 404
    assert client.get(f"/shop/orders/{first['order_id']}/events").status_code == 404


def test_the_order_page_shows_the_email_masked(client):
    page = client.get(place(client)["order_url"]).content.decode()
    assert "a***@example.com" in page
    assert "ada.lovelace" not in page
    assert "ada.lovelace" not in client.get(place(client)["order_url"] + ".json").content.decode()


def test_the_shop_form_leads_to_the_orders_unguessable_link(client):
    response = client.post("/shop/", {"customer_email": "ada@example.com", "sku": "BOOK-1", "quantity": "1",
                                      "total_cents": "100"})
    order = Order.objects.get(customer_email="ada@example.com")
    assert response.status_code == 302 and response["Location"] == f"/shop/orders/{order.public_token}"


# --- traceparent: trusted only where configured ---------------------------------------------------
def test_an_anonymous_order_with_a_traceparent_starts_its_own_trace_and_keeps_the_received_one_as_a_link(client):
    placed = place(client, HTTP_TRACEPARENT=TRACEPARENT)
    event = Event.objects.get(id=placed["event_id"])
    assert placed["trace_id"] != RECEIVED and event.trace_id == placed["trace_id"]
    assert event.linked_trace_id == RECEIVED


def test_an_authenticated_api_call_continues_its_callers_trace(client, api_token):
    response = client.post("/api/events", json.dumps({"type": "order.placed", "payload": {**ORDER, "order_id": 1}}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_token}",
                           HTTP_TRACEPARENT=TRACEPARENT)
    assert response.status_code == 202, response.content
    event = Event.objects.get(id=response.json()["event_id"])
    assert event.trace_id == RECEIVED and event.linked_trace_id is None
    assert response["X-Trace-Id"] == RECEIVED


def test_a_request_with_a_bad_token_does_not_continue_the_trace(client):
    response = client.post("/api/events", "{}", content_type="application/json",
                           HTTP_AUTHORIZATION="Bearer nope", HTTP_TRACEPARENT=TRACEPARENT)
    assert response.status_code == 401 and response["X-Trace-Id"] != RECEIVED


@pytest.mark.parametrize("mode, anonymous_trusted, api_trusted", [("all", True, True), ("none", False, False)])
def test_pipeline_trusted_traceparent_decides_where_a_traceparent_is_trusted(
    client, api_token, settings, mode, anonymous_trusted, api_trusted
):
    settings.PIPELINE_TRUSTED_TRACEPARENT = mode
    anonymous = Event.objects.get(id=place(client, HTTP_TRACEPARENT=TRACEPARENT)["event_id"])
    assert (anonymous.trace_id == RECEIVED) is anonymous_trusted
    assert anonymous.linked_trace_id == (None if anonymous_trusted else RECEIVED)
    response = client.post("/api/events", json.dumps({"type": "order.placed", "payload": {**ORDER, "order_id": 1}}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_token}",
                           HTTP_TRACEPARENT=TRACEPARENT)
    api = Event.objects.get(id=response.json()["event_id"])
    assert (api.trace_id == RECEIVED) is api_trusted


def test_a_bad_pipeline_trusted_traceparent_is_refused_naming_the_setting(settings):
    from pipeline.request_context import trust_mode

    settings.PIPELINE_TRUSTED_TRACEPARENT = "sometimes"
    with pytest.raises(ImproperlyConfigured, match="PIPELINE_TRUSTED_TRACEPARENT"):
        trust_mode()


# --- open streams: bounded per client and in total ------------------------------------------------
def request_from(address: str):
    return RequestFactory().get("/shop/orders/x/events", REMOTE_ADDR=address)


def test_streams_beyond_the_per_client_limit_get_429_and_beyond_the_total_503_with_retry_after(settings):
    settings.PIPELINE_SSE_MAX_STREAMS_PER_CLIENT = 2
    settings.PIPELINE_SSE_MAX_STREAMS = 3
    held = [stream_limits.acquire(request_from("10.0.0.1")) for _ in range(2)]
    assert all(isinstance(s, stream_limits.Slot) for s in held)
    refused = stream_limits.acquire(request_from("10.0.0.1"))
    assert refused.status_code == 429 and refused["Retry-After"].isdigit()
    assert "too many open event streams from this client" in json.loads(refused.content)["error"]
    held.append(stream_limits.acquire(request_from("10.0.0.2")))
    full = stream_limits.acquire(request_from("10.0.0.3"))
    assert full.status_code == 503 and full["Retry-After"].isdigit() and json.loads(full.content)["limit"] == 3
    for slot in held:
        slot.release()
        slot.release()  # once only
    assert stream_limits.open_streams() == 0


def test_a_streams_place_is_given_back_when_the_server_closes_it_even_unread(settings):
    settings.PIPELINE_SSE_MAX_STREAMS_PER_CLIENT = 1
    slot = stream_limits.acquire(request_from("10.0.0.9"))
    body = stream_limits.HeldStream(iter(["retry: 1000\n\n"]), slot)
    assert stream_limits.acquire(request_from("10.0.0.9")).status_code == 429
    body.close()  # what the WSGI server does when the client goes away
    again = stream_limits.acquire(request_from("10.0.0.9"))
    assert isinstance(again, stream_limits.Slot)
    assert list(stream_limits.HeldStream(iter(["a", "b"]), again)) == ["a", "b"]  # read to its end: released too
    assert stream_limits.open_streams() == 0
