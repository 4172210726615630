"""What counts as the run store being unreachable, and what the web answers meanwhile (the outage
itself, with real processes, is tests/pipeline/test_store_outage.py)."""
from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from django.db import utils

from pipeline import _store_health as store_health
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


def _raised_while_handling(handled: BaseException, raised: BaseException) -> BaseException:
    """`raised`, raised in the `except` block that handled `handled` (its `__context__`, not its cause)."""
    try:
        try:
            raise handled
        except BaseException:
            raise raised
    except BaseException as exc:
        return exc


def test_a_retry_raised_while_handling_an_outage_error_is_not_itself_an_outage():
    """A stage that failed on the outage is recorded once the store answers, then retried: its
    `Retry` carries the outage's error as context only. Taken for an outage, it said
    `store.unavailable` a second time for one outage."""
    from dramatiq.errors import Retry

    retry = _raised_while_handling(_wrapped(psycopg.OperationalError("server closed the connection")),
                                   Retry(delay=100))
    assert retry.__context__ is not None and retry.__cause__ is None
    assert not store_health.is_unreachable(retry)
    with_none = _raised_while_handling(psycopg.OperationalError("refused"), ValueError("no"))
    with_none.__suppress_context__ = True  # `raise ... from None` keeps the context too
    assert not store_health.is_unreachable(with_none)


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
    from pipeline import _writer as writer

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

    from pipeline import _runtime as runtime, _stage_store as stage_store
    from pipeline._definitions import registry

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


@pytest.mark.django_db(transaction=True)
def test_a_stage_that_failed_on_the_outage_is_retried_with_its_own_backoff_and_no_second_outage(monkeypatch):
    """The stage's own database write failed while the store was down; its failure is recorded
    once the store answers, and the stage is retried: with its own backoff, as a failed attempt,
    without saying `store.unavailable` again (the store is up)."""
    from dramatiq.errors import Retry
    from structlog.testing import capture_logs

    import pipeline._publisher
    from pipeline import emit, _runtime as runtime
    from pipeline._definitions import registry
    from pipeline.models import Run, StageRun
    from tests.testapp import pipelines

    monkeypatch.setattr(pipeline._publisher, "enqueue_stage", lambda stage, **kw: None)  # no broker here
    run = Run.objects.get(event_id=emit("test.diamond", {"n": 1}), pipeline="diamond")

    def store_gone(ctx):
        raise _wrapped(psycopg.OperationalError("server closed the connection unexpectedly"))

    monkeypatch.setattr(pipelines, "_record", store_gone)
    stage = registry.get("diamond").stages["split"]
    with capture_logs() as captured, pytest.raises(Retry) as retried:
        runtime.execute_stage(stage, str(run.id))
    said = [line["event"] for line in captured]
    assert "stage.retrying" in said and not [e for e in said if e.startswith("store.")], said
    assert retried.value.delay <= 500  # the stage's backoff (0.05 to 0.5 s), not the store's 1 s
    assert StageRun.objects.get(run=run, stage="split").status == "retrying"
    assert not store_health.is_down()


# A pair, in this order: the outage is one per process, and the test process runs every test.
def test_a_test_may_leave_its_process_noticing_an_outage():
    """As tests/test_store_outage.py does: its own emits saw the store go, nothing of its own
    committed after it came back."""
    assert store_health.outage.noticed(psycopg.OperationalError("refused"))


def test_each_test_starts_with_the_store_up_as_far_as_its_process_knows():
    assert not store_health.is_down()
