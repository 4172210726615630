"""The checker behind `api_responses_match_the_document` finds each kind of mismatch: a check
that could not fail would let every API test pass whatever the API answered."""
import json

import pytest

from tests.openapi_contract import contract

JSON = {"Content-Type": "application/json"}
RUN_ID = "00000000-0000-0000-0000-000000000000"


def problems(method, path, status, body, headers=JSON):
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return contract().problems(method, path, status, headers, raw)


def schedule(**changes):
    base = {"name": "s", "source": "runtime", "pipeline": "ticks", "actor": None, "payload": {}, "cron": None,
            "timezone": "UTC", "interval_seconds": 60.0, "run_at": None, "misfire_grace_seconds": 60,
            "catch_up": "coalesce", "catch_up_window_seconds": 3600, "overlap": "allow", "jitter_seconds": 0.0,
            "paused": False, "next_fire_at": None, "last_fire_at": None, "last_run_id": None,
            "last_run_status": None}
    return {**base, **changes}


def test_a_response_as_documented_passes():
    assert problems("GET", "/api/schedules/s", 200, schedule()) == []
    assert problems("GET", "/api/schedules/s", 404, {"error": "no schedule named 's'"}) == []
    assert problems("POST", f"/api/runs/{RUN_ID}/cancel", 401, {"error": "authentication required"}) == []


def test_a_status_the_operation_does_not_list_fails():
    assert "does not list" in problems("GET", "/api/schedules/s", 500, {"error": "boom"})[0]


def test_a_content_type_the_status_does_not_list_fails():
    found = problems("GET", "/api/schedules/s", 404, b"<h1>Not Found</h1>", {"Content-Type": "text/html"})
    assert "text/html" in found[0]


@pytest.mark.parametrize("body, where", [
    (schedule(paused="no"), "paused"),
    (schedule(timezone=None), "timezone"),
    ({k: v for k, v in schedule().items() if k != "next_fire_at"}, "the top"),
    (schedule(last_run_status="exploded"), "last_run_status"),
    (schedule(next_fire_at="tomorrow"), "next_fire_at"),
    (schedule(last_run_id="not-a-uuid"), "last_run_id"),
])
def test_a_body_the_schema_refuses_fails_naming_where(body, where):
    found = problems("GET", "/api/schedules/s", 200, body)
    assert found and where in found[0]


def test_a_body_on_a_status_documented_without_one_fails():
    assert "documented without one" in problems("DELETE", "/api/webhooks/1", 204, {"deleted": 1})[0]


def test_an_undocumented_path_must_answer_a_json_error_and_a_405_must_say_allow():
    assert problems("GET", "/api/nowhere", 404, {"error": "no such endpoint"}) == []
    assert problems("GET", "/api/nowhere", 404, b"<h1>Not Found</h1>", {"Content-Type": "text/html"})
    assert "Allow" in problems("TRACE", "/api/runs", 405, {"error": "not allowed"})[0]


@pytest.mark.django_db
def test_the_served_document_is_valid_openapi_3_1_generated_from_the_models(client):
    from openapi_spec_validator import validate

    from web.api import schemas

    document = client.get("/api/openapi.json").json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    for model in (*schemas.INPUT_MODELS, *schemas.OUTPUT_MODELS):
        assert model.__name__ in document["components"]["schemas"]
    schedule = document["components"]["schemas"]["Schedule"]
    assert {"type": "null"} in schedule["properties"]["actor"]["anyOf"]  # the nullable fields say so
