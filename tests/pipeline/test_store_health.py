"""What counts as the run store being unreachable, and what the web answers meanwhile (the outage
itself, with real processes, is tests/pipeline/test_store_outage.py)."""
from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from django.db import utils

from pipeline import store_health
from pipeline.errors import StoreUnavailable


def _wrapped(inner: BaseException) -> BaseException:
    outer = utils.OperationalError(str(inner))
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("connection failed: Connection refused"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.InterfaceError("the connection is closed"),
    _wrapped(psycopg.OperationalError("server closed the connection unexpectedly")),
    StoreUnavailable(psycopg.OperationalError("refused")),
])
def test_errors_that_mean_the_database_cannot_be_reached_are_an_outage(error):
    assert store_health.is_unreachable(error)


@pytest.mark.parametrize("error", [
    psycopg.errors.DeadlockDetected("deadlock detected"),
    psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg.errors.UniqueViolation("duplicate key"),
    utils.OperationalError("database is locked"),  # SQLite's lock: contention, not an outage
    ValueError("no"),
])
def test_errors_of_a_database_that_answers_are_not_an_outage(error):
    assert not store_health.is_unreachable(error)


@pytest.fixture
def store_down(monkeypatch):
    from pipeline import writer

    def unreachable(op):
        raise StoreUnavailable(psycopg.OperationalError("connection refused"))

    monkeypatch.setattr(writer, "run", unreachable)
    monkeypatch.setattr(writer, "run_direct", unreachable)
    yield
    store_health.outage.succeeded()


def test_an_emit_while_the_store_is_unreachable_is_refused_with_503_and_a_json_error(client, api_token, store_down):
    response = client.post("/api/events", {"type": "test.started", "payload": {"value": 1}},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["error"] == "the run store (database) is unreachable: nothing was recorded; try again shortly"
    assert body["store"] == "unavailable"


def test_an_outage_is_said_once_and_its_end_once(caplog):
    events = []
    from structlog.testing import capture_logs

    with capture_logs() as captured:
        for _ in range(5):
            assert store_health.outage.noticed(psycopg.OperationalError("refused"))
        store_health.outage.succeeded()
        store_health.outage.succeeded()
    events = [line["event"] for line in captured]
    assert events == ["store.unavailable", "store.recovered"]
    assert captured[0]["error_type"] == "OperationalError"


def test_a_stage_whose_claim_cannot_be_written_goes_back_to_the_broker_not_counted_as_a_failure(db, monkeypatch):
    """Dramatiq's Retries re-publishes a `Retry` with its delay, without a traceback, and neither
    counts it against the stage's attempts nor dead-letters it (unlike any other exception)."""
    from dramatiq.errors import Retry

    from pipeline import runtime, stage_store
    from pipeline.definitions import registry

    def unreachable(*args, **kwargs):
        raise StoreUnavailable(psycopg.OperationalError("connection refused"))

    monkeypatch.setattr(stage_store, "claim", unreachable)
    stage = registry.get("three_stages").stages["first"]
    try:
        with pytest.raises(Retry) as retried:
            runtime.execute_stage(stage, "00000000-0000-0000-0000-000000000001")
    finally:
        store_health.outage.succeeded()
    assert 750 <= retried.value.delay <= 1250  # the first pause: 1 s, with jitter
    assert stage.actor.options["retry_when"](1000, retried.value)  # retried however many times it came back
