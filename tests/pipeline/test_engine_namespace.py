"""The engine's namespace: outcome events (run.*), webhook deliveries (webhook.*) and stage.* are
the engine's to emit, and the idempotency keys of schedule fires, outcomes and deliveries
(schedule:, outcome:, webhook:) are the engine's to take. Neither an API client nor user code's
`emit` can use them; the engine still does. Nor can a schedule send a stage's internal actor."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from pipeline import DefinitionError, ReservedName, emit, event_type, start
from pipeline.models import Event, Run
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

OUTCOME = {"pipeline": "three_stages", "run_id": "00000000-0000-0000-0000-000000000001",
           "event_id": "00000000-0000-0000-0000-000000000002", "status": "failed", "trigger": "event"}


def post_event(client, token, body):
    return client.post("/api/events", data=json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize("event_type_name, payload", [
    ("webhook.delivery", {"subscription_id": 1, "event_type": "run.failed", "event_id": "x", "body": "{}"}),
    ("run.failed", OUTCOME),
    ("run.succeeded", {**OUTCOME, "status": "succeeded"}),
    ("stage.failed", {}),
])
def test_the_api_refuses_event_types_the_engine_emits(client, api_token, event_type_name, payload):
    response = post_event(client, api_token, {"type": event_type_name, "payload": payload})
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "type"
    assert "reserved for the engine" in response.json()["error"]
    assert not Event.objects.exists()


@pytest.mark.parametrize("key", ["schedule:nightly@2026-12-01T02:30:00+00:00", "outcome:abc:failed:",
                                 "webhook:1:abc"])
def test_the_api_refuses_idempotency_keys_in_the_engines_namespace(client, api_token, key):
    response = post_event(client, api_token, {"type": "test.started", "payload": {}, "idempotency_key": key})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"idempotency_key {key!r}: the idempotency keys starting with {key.split(':')[0] + ':'!r} "
                 f"are reserved for the engine",
        "field": "idempotency_key"}
    assert not Event.objects.exists()


def test_keys_that_only_resemble_the_engines_are_fine(client, api_token):
    for key in ("scheduled:nightly", "my-schedule:1", "Webhook-1", "order:42"):
        assert post_event(client, api_token, {"type": "test.started", "payload": {}, "idempotency_key": key}
                          ).status_code == 202


def test_user_code_cannot_emit_an_outcome_or_take_a_schedule_key():
    with pytest.raises(ReservedName) as caught:
        emit("run.failed", OUTCOME)
    assert caught.value.field == "type" and isinstance(caught.value, ValueError)
    with pytest.raises(ReservedName) as caught:
        emit("test.started", {}, idempotency_key="schedule:nightly@2026-12-01T02:30:00+00:00")
    assert caught.value.field == "idempotency_key"
    with pytest.raises(ReservedName):
        start("ticks", {}, idempotency_key="schedule:tick_every_second@2026-12-01T00:00:00+00:00")
    assert not Event.objects.exists()


def test_a_schedule_fire_keeps_its_key_though_a_client_tried_to_take_it_first(client, api_token):
    from schedules.firing import fire
    from schedules.operations import create
    from schedules.timing import fire_key

    create({"name": "nightly", "pipeline": "ticks", "cron": "30 2 * * *", "timezone": "UTC"})
    fire_time = datetime(2026, 12, 1, 2, 30, tzinfo=timezone.utc)
    key = fire_key("nightly", fire_time)
    assert post_event(client, api_token, {"type": "test.started", "payload": {}, "idempotency_key": key}
                      ).status_code == 400
    started = fire("nightly", fire_time)
    assert started and started["run_id"]
    run = Run.objects.select_related("event").get(id=started["run_id"])
    assert run.pipeline == "ticks" and run.event.idempotency_key == key


def test_the_engine_itself_still_emits_in_its_namespace():
    event_id = emit("run.failed", OUTCOME, idempotency_key="outcome:r1:failed:", engine=True)
    assert Event.objects.get(id=event_id).type == "run.failed"


def test_declaring_an_event_type_in_the_engines_namespace_fails_at_import():
    with pytest.raises(DefinitionError, match=r"event type 'webhook.custom': names starting with 'webhook.' "
                                              r"are the engine's"):
        event_type("webhook.custom")


@pytest.mark.broker  # a real process (the slow tier)
def test_manage_py_emit_refuses_a_reserved_type_with_exit_code_2(test_database_url):
    from tests.conftest import child_env

    result = subprocess.run([sys.executable, "manage.py", "emit", "run.failed", "--data", json.dumps(OUTCOME)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env=child_env(test_database_url))
    assert result.returncode == 2, result.stderr
    assert "reserved for the engine" in result.stderr


# --- schedules cannot send the engine's own actors ---------------------------------------------


def test_a_schedule_cannot_send_a_stage_actor(client, api_token):
    response = client.post("/api/schedules", data=json.dumps(
        {"name": "sneaky", "actor": "three_stages.first", "payload": {"run_id": "x"}, "interval_seconds": 60}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 400, response.content
    assert response.json()["field"] == "actor"
    assert "is stage 'first' of pipeline 'three_stages'" in response.json()["error"]


def test_a_schedule_declared_in_code_on_a_stage_actor_is_refused():
    from schedules.registry import Schedule, ScheduleError, check_target

    with pytest.raises(ScheduleError, match="run only by the engine; schedule the pipeline instead"):
        check_target(Schedule("sneaky", actor="three_stages.second", interval_seconds=60))
