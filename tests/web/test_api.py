"""The shop endpoint and the JSON API: status codes, error bodies, authentication."""
import json

import pytest

from pipeline.models import Event, Run
from web.shop.models import Order

ORDER = {"customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}], "total_cents": 4200}


def post_json(client, url, body, **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **headers)


@pytest.mark.django_db
def test_placing_an_order_answers_201_with_order_and_event_ids(client):
    response = post_json(client, "/shop/orders", ORDER)
    assert response.status_code == 201
    body = response.json()
    order = Order.objects.get(pk=body["order_id"])
    event = Event.objects.get(id=body["event_id"])
    assert event.type == "order.placed" and event.payload["order_id"] == order.pk
    assert Run.objects.get(event=event).pipeline == "fulfil_order"
    assert body["trace_id"] == event.trace_id == response["X-Trace-Id"]


@pytest.mark.django_db
def test_malformed_json_is_a_400_with_a_json_error(client):
    response = post_json(client, "/shop/orders", '{"customer_email": ')
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed JSON")
    assert Order.objects.count() == 0 and Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["customer_email", "items", "total_cents"])
def test_a_missing_field_is_a_400_naming_the_field(client, field):
    body = {k: v for k, v in ORDER.items() if k != field}
    response = post_json(client, "/shop/orders", body)
    assert response.status_code == 400
    assert response.json() == {"error": f"missing field: {field}", "field": field}
    assert Order.objects.count() == 0 and Event.objects.count() == 0


@pytest.mark.django_db
def test_an_invalid_field_value_is_a_400_naming_the_field(client):
    response = post_json(client, "/shop/orders", {**ORDER, "items": [{"sku": "A", "quantity": 0}]})
    assert response.status_code == 400
    assert response.json()["field"] == "items.0.quantity"
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_a_non_json_content_type_is_a_415(client):
    response = client.post("/shop/orders", data={"customer_email": "x"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/events/00000000-0000-0000-0000-000000000000",
                                 "/api/runs/00000000-0000-0000-0000-000000000000"])
def test_api_without_a_valid_token_is_401(client, url):
    assert client.get(url).status_code == 401
    response = client.get(url, HTTP_AUTHORIZATION="Bearer wrong-token")
    assert response.status_code == 401 and response.json()["error"] == "invalid or inactive API token"


@pytest.mark.django_db
def test_api_returns_the_event_with_its_runs_and_the_run_with_its_stages(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    event_id = post_json(client, "/shop/orders", ORDER).json()["event_id"]
    event = client.get(f"/api/events/{event_id}", **auth).json()
    assert event["type"] == "order.placed" and len(event["runs"]) == 1
    run_id = event["runs"][0]["run_id"]
    run = client.get(f"/api/runs/{run_id}", **auth).json()
    assert run["pipeline"] == "fulfil_order" and run["event_id"] == event_id
    assert [s["stage"] for s in run["stages"]] == ["reserve_stock"]
    assert client.get("/api/runs/not-a-uuid", **auth).status_code == 404


@pytest.mark.django_db
def test_posting_an_event_through_the_api(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    response = post_json(client, "/api/events", {"type": "test.started", "payload": {"value": 2}}, **auth)
    assert response.status_code == 202 and Event.objects.filter(id=response.json()["event_id"]).exists()
    unknown = post_json(client, "/api/events", {"type": "nope", "payload": {}}, **auth)
    assert unknown.status_code == 400 and "unknown event type 'nope'" in unknown.json()["error"]
    invalid = post_json(client, "/api/events", {"type": "test.started", "payload": {"value": "x"}}, **auth)
    assert invalid.status_code == 400 and invalid.json()["fields"][0]["field"] == "value"
    assert post_json(client, "/api/events", {"payload": {}}, **auth).json()["field"] == "type"
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_an_event_posted_urgent_is_stored_urgent_and_shown_so(client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    urgent = post_json(client, "/api/events", {"type": "test.started", "payload": {}, "priority": "urgent"}, **auth)
    assert urgent.status_code == 202 and Event.objects.get(id=urgent.json()["event_id"]).priority == "urgent"
    assert client.get(f"/api/events/{urgent.json()['event_id']}", **auth).json()["priority"] == "urgent"
    normal = post_json(client, "/api/events", {"type": "test.started", "payload": {}, "priority": None}, **auth)
    assert client.get(f"/api/events/{normal.json()['event_id']}", **auth).json()["priority"] is None
    refused = post_json(client, "/api/events", {"type": "test.started", "payload": {}, "priority": "high"}, **auth)
    assert refused.status_code == 400 and refused.json()["field"] == "priority"
    assert Event.objects.count() == 2


@pytest.mark.django_db
def test_api_token_is_required_to_post_events_even_with_a_session(client, admin_client):
    response = post_json(admin_client, "/api/events", {"type": "test.started", "payload": {}})
    assert response.status_code == 401
