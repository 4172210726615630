"""Hostile and careless input to the API, the dashboard's lists and the shop: every malformed value
is a 4xx naming the field, never a 500, and the OpenAPI document says what the API does.

The cases are the exact requests quoted in issue 16 (the OpenAPI findings) and issue 15 item 7
(35 bad inputs that answered 500) and item 13 (schedule values that can never fire)."""
import base64
import json

import pytest
from django.test import Client

from pipeline.models import Event, Run
from schedules import operations
from schedules.models import ScheduleRecord
from schedules.registry import ScheduleError
from tests.openapi_contract import contract
from web.shop.models import Order

ORDER = {"customer_email": "ada@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}], "total_cents": 4200}
SCHEDULE = {"name": "s1", "pipeline": "ticks", "interval_seconds": 60}
LONE_SURROGATE = '"\\ud800"'  # as JSON text: a string holding one unpaired UTF-16 surrogate


def send(client, method, url, body, token=None, content_type="application/json"):
    """Sends `body` as is when it is text (so that NaN, 5,000 digits or a lone surrogate reach the
    server exactly as written), else as JSON."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return getattr(client, method)(url, data=data, content_type=content_type, **headers)


def assert_400_naming(response, field):
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body.get("field") == field, body
    return body


def document():
    return Client().get("/api/openapi.json").json()


def component(name):
    return document()["components"]["schemas"][name]


def nested(depth: int, leaf="x"):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


# ---- issue 16: the OpenAPI document is true ------------------------------------------------------

@pytest.mark.django_db
def test_schedule_responses_with_null_actor_cron_and_run_at_match_the_document(client, api_token):
    created = send(client, "post", "/api/schedules", SCHEDULE, api_token)
    assert created.status_code == 201
    body = created.json()
    assert body["actor"] is None and body["cron"] is None and body["run_at"] is None
    assert not contract().problems("GET", "/api/schedules/s1", 200, {"Content-Type": "application/json"},
                                   json.dumps(body).encode())


@pytest.mark.django_db
@pytest.mark.parametrize("method, url", [
    ("post", "/api/schedules"), ("patch", "/api/schedules/s1"), ("put", "/api/schedules/s1"),
    ("post", "/api/schedules/s1/backfill"), ("post", "/api/events"), ("post", "/api/webhooks"),
])
def test_a_body_that_is_not_json_is_a_415_the_document_lists(client, api_token, method, url):
    send(client, "post", "/api/schedules", SCHEDULE, api_token)
    response = send(client, method, url, "name=s1", api_token, content_type="text/plain")
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    template = url.replace("/s1", "/{name}")
    assert "415" in document()["paths"][template][method]["responses"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/webhooks/abc", "/api/webhooks/1.5", "/api/webhooks/-1",
                                 "/api/no-such-endpoint"])
def test_a_path_no_route_matches_is_a_json_404(client, api_token, url):
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json" and response.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("url, allowed", [
    ("/api/events", {"POST"}), ("/api/runs", {"GET"}), ("/api/openapi.json", {"GET", "HEAD"}),
    ("/api/runs/00000000-0000-0000-0000-000000000000/events", {"GET"}),
    ("/api/runs/00000000-0000-0000-0000-000000000000/cancel", {"POST"}),
    ("/api/webhooks", {"GET", "POST"}), ("/api/webhooks/1", {"GET", "DELETE"}),
    ("/api/schedules", {"GET", "POST"}), ("/api/schedules/s1", {"GET", "PATCH", "PUT", "DELETE"}),
])
def test_trace_is_a_json_405_with_an_allow_header(client, api_token, url, allowed):
    response = client.generic("TRACE", url, HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 405
    assert {m.strip() for m in response["Allow"].split(",")} == allowed
    assert "not allowed" in response.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "delete", "put"])
def test_writing_to_the_openapi_document_is_a_json_405_not_an_html_403(method):
    browser = Client(enforce_csrf_checks=True)
    response = getattr(browser, method)("/api/openapi.json")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    assert response["Content-Type"] == "application/json" and response.json()["error"]


@pytest.mark.django_db
def test_an_empty_until_is_refused_as_not_a_date_time(client, api_token):
    body = assert_400_naming(client.get("/api/runs?until=", HTTP_AUTHORIZATION=f"Bearer {api_token}"), "until")
    assert "must not be empty" in body["error"] or "date-time" in body["error"]


@pytest.mark.django_db
def test_an_empty_idempotency_key_is_refused_and_the_document_says_so(client, api_token):
    response = send(client, "post", "/api/events", {"type": "test.started", "payload": {"value": 1},
                                                    "idempotency_key": ""}, api_token)
    assert_400_naming(response, "idempotency_key")
    key_schema = component("EventInput")["properties"]["idempotency_key"]["anyOf"][0]
    assert key_schema["minLength"] == 1
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["pipeline", "actor"])
def test_an_empty_pipeline_or_actor_is_refused_and_the_document_says_so(client, api_token, field):
    body = {"name": "s2", "interval_seconds": 60, "pipeline": "ticks", field: ""}
    assert_400_naming(send(client, "post", "/api/schedules", body, api_token), field)
    assert component("ScheduleInput")["properties"][field]["anyOf"][0]["minLength"] == 1


CRAFTED_CURSORS = [  # well-formed cursors holding a moment that overflows once converted to UTC
    base64.urlsafe_b64encode(b"0001-01-01T00:00:00+01:00|" + b"0" * 32).decode().rstrip("="),
    base64.urlsafe_b64encode(b"9999-12-31T23:59:59-05:00|" + b"0" * 32).decode().rstrip("="),
]


@pytest.mark.django_db
@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
def test_a_cursor_the_api_did_not_return_is_a_documented_400(client, api_token, cursor):
    response = client.get(f"/api/runs?cursor={cursor}", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert_400_naming(response, "cursor")
    assert "400" in document()["paths"]["/api/runs"]["get"]["responses"]


@pytest.mark.django_db
def test_a_backfill_over_10000_fire_times_is_a_documented_400(client, api_token):
    send(client, "post", "/api/schedules", {**SCHEDULE, "interval_seconds": 1}, api_token)
    response = send(client, "post", "/api/schedules/s1/backfill",
                    {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}, api_token)
    body = assert_400_naming(response, "end")
    assert "10000" in body["error"] or "10,000" in body["error"]
    assert "10,000" in json.dumps(document()["paths"]["/api/schedules/{name}/backfill"])


@pytest.mark.django_db
@pytest.mark.parametrize("field, value, schema_bound", [
    ("cron", 5, None),
    ("interval_seconds", 1e308, "maximum"),
    ("misfire_grace_seconds", 1e30, "maximum"),
])
def test_schedule_values_of_the_wrong_type_or_out_of_range_are_400_naming_the_field(client, api_token, field,
                                                                                   value, schema_bound):
    body = {**SCHEDULE, field: value}
    if field == "cron":
        body.pop("interval_seconds")
    assert_400_naming(send(client, "post", "/api/schedules", body, api_token), field)
    assert not ScheduleRecord.objects.exists()
    if schema_bound:
        prop = component("ScheduleInput")["properties"][field]
        assert schema_bound in (prop.get("anyOf", [prop])[0])


# ---- issue 15 item 7: 35 bad inputs that answered 500 --------------------------------------------

@pytest.mark.django_db
def test_json_nested_2000_deep_on_the_public_order_endpoint_is_a_400(client):
    response = send(client, "post", "/shop/orders", "[" * 2500 + "]" * 2500)
    assert response.status_code == 400 and "nested deeper than 64" in response.json()["error"]


@pytest.mark.django_db
def test_a_5000_digit_integer_on_the_public_order_endpoint_is_a_400_naming_the_field(client):
    raw = json.dumps(ORDER).replace("4200", "9" * 5000)
    assert "64-bit" in assert_400_naming(send(client, "post", "/shop/orders", raw), "total_cents")["error"]
    assert Order.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("total", [2**63, 2**31, 2**40])
def test_a_total_over_the_integer_column_is_a_400_naming_the_field(client, total):
    assert_400_naming(send(client, "post", "/shop/orders", json.dumps({**ORDER, "total_cents": total})),
                      "total_cents")
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_the_shop_form_refuses_a_total_over_the_integer_column_and_a_nul(client):
    for fields in ({"total_cents": str(2**31)}, {"total_cents": "9" * 5000}, {"customer_email": "a\x00@b.c"}):
        form = {"customer_email": "ada@example.com", "sku": "BOOK-1", "quantity": "1", "total_cents": "100", **fields}
        response = client.post("/shop/", form)
        assert response.status_code == 400, fields
    assert Order.objects.count() == 0


BAD_MOMENTS = ["2026-02-30T00:00:00", "2026-13-01T00:00:00", "2026-01-01T25:00:00", "2026-01-01T00:00:00+99:00",
               "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00"]


@pytest.mark.django_db
@pytest.mark.parametrize("moment", BAD_MOMENTS)
@pytest.mark.parametrize("parameter", ["since", "until"])
def test_a_date_time_that_does_not_exist_or_is_out_of_range_is_a_400_on_the_runs_api(client, api_token, moment,
                                                                                      parameter):
    from urllib.parse import quote

    response = client.get(f"/api/runs?{parameter}={quote(moment)}", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert_400_naming(response, parameter)


@pytest.fixture
def staff_client(db):
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_user("operator", password="pw", is_staff=True))
    return client


@pytest.mark.parametrize("moment", BAD_MOMENTS)
@pytest.mark.parametrize("page", ["/dashboard/runs/", "/dashboard/failed/"])
def test_the_dashboard_lists_show_a_bad_since_as_an_error_not_a_500(staff_client, page, moment):
    from urllib.parse import quote

    response = staff_client.get(f"{page}?since={quote(moment)}")
    assert response.status_code == 200
    assert "parameter &#x27;since&#x27;" in response.content.decode()


@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
@pytest.mark.parametrize("page", ["/dashboard/runs/", "/dashboard/failed/", "/dashboard/events/"])
@pytest.mark.parametrize("direction", ["before", "after"])
def test_the_dashboard_lists_show_a_crafted_cursor_as_an_error_not_a_500(staff_client, page, cursor, direction):
    response = staff_client.get(f"{page}?{direction}={cursor}")
    assert response.status_code == 200
    assert "is not a cursor this list returned" in response.content.decode()


@pytest.mark.django_db
def test_a_lone_surrogate_in_an_idempotency_key_is_a_400_naming_it(client, api_token):
    raw = '{"type": "test.started", "payload": {"value": 1}, "idempotency_key": %s}' % LONE_SURROGATE
    assert_400_naming(send(client, "post", "/api/events", raw, api_token), "idempotency_key")
    assert Event.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["name", "secret"])
def test_a_lone_surrogate_in_a_webhook_name_or_secret_is_a_400_naming_it(client, api_token, field):
    body = {"name": "hook", "url": "http://127.0.0.1:9/", "secret": "s" * 32}
    raw = json.dumps(body).replace(json.dumps(body[field]), LONE_SURROGATE[:-1] + "s" * 31 + '"')
    assert_400_naming(send(client, "post", "/api/webhooks", raw, api_token), field)


@pytest.mark.django_db
@pytest.mark.parametrize("field, raw_value", [
    ("interval_seconds", "1e20"), ("interval_seconds", "Infinity"), ("interval_seconds", "1e308"),
    ("misfire_grace_seconds", str(2**70)), ("misfire_grace_seconds", "NaN"), ("misfire_grace_seconds", "1e30"),
    ("run_at", '"0001-01-01T00:00:00"'), ("run_at", '"0001-01-01T00:00:00+05:00"'),
    ("jitter_seconds", "1e300"), ("catch_up_window_seconds", "1500000000000"), ("cron", '"0 0 31 2 *"'),
])
def test_schedule_values_that_overflow_or_can_never_fire_are_400_naming_the_field(client, api_token, field,
                                                                                 raw_value):
    body = {"name": "s3", "pipeline": "ticks", "interval_seconds": 60}
    if field in ("run_at", "cron"):
        body.pop("interval_seconds")
    raw = json.dumps({**body, field: "__VALUE__"}).replace('"__VALUE__"', raw_value)
    assert_400_naming(send(client, "post", "/api/schedules", raw, api_token), field)
    assert not ScheduleRecord.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("values, field", [
    ({"interval_seconds": 1e20}, "interval_seconds"), ({"interval_seconds": float("inf")}, "interval_seconds"),
    ({"interval_seconds": 60, "jitter_seconds": 1e300}, "jitter_seconds"),
    ({"interval_seconds": 60, "catch_up_window_seconds": 1_500_000_000_000}, "catch_up_window_seconds"),
    ({"interval_seconds": 60, "misfire_grace_seconds": 2**70}, "misfire_grace_seconds"),
    ({"cron": "0 0 31 2 *"}, "cron"), ({"run_at": "0001-01-01T00:00:00"}, "run_at"),
])
def test_the_schedules_own_checks_refuse_the_same_values_for_the_admin_and_cli(values, field):
    with pytest.raises(ScheduleError) as refused:
        operations.create({"name": "s4", "pipeline": "ticks", **values})
    assert refused.value.field == field


@pytest.mark.django_db
def test_a_february_29_cron_is_kept_since_it_fires_in_leap_years(client, api_token):
    response = send(client, "post", "/api/schedules", {"name": "leap", "pipeline": "ticks", "cron": "0 0 29 2 *"},
                    api_token)
    assert response.status_code == 201, response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("url, body", [
    ("/api/schedules", {"name": "deep", "pipeline": "ticks", "interval_seconds": 60, "payload": nested(255)}),
    ("/api/events", {"type": "test.started", "payload": nested(255)}),
])
def test_a_payload_nested_255_deep_is_a_400_with_a_clear_message(client, api_token, url, body):
    response = send(client, "post", url, body, api_token)
    body = assert_400_naming(response, "payload")
    assert "nested deeper than 64 levels" in body["error"]
    assert Event.objects.count() == 0 and Run.objects.count() == 0


@pytest.mark.django_db
def test_a_payload_within_the_depth_limit_is_accepted(client, api_token):
    body = {"name": "deep", "pipeline": "ticks", "interval_seconds": 60, "payload": {"deep": nested(60)}}
    assert send(client, "post", "/api/schedules", body, api_token).status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("raw, field", [
    ('{"type": "test.started", "payload": {"value": "a\\u0000b"}}', "payload.value"),
    ('{"type": "test.started", "payload": {"value": NaN}}', "payload.value"),
    ('{"type": "test.started", "payload": {"value": 1e999}}', "payload.value"),
])
def test_values_no_database_can_store_are_400_naming_their_path(client, api_token, raw, field):
    assert_400_naming(send(client, "post", "/api/events", raw, api_token), field)

