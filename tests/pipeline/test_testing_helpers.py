"""`pipeline.testing` itself, as a user's suite meets it: Django's TestCase and TransactionTestCase
with the mixin, runs that move only when drained, a rolled-back emit that publishes nothing,
failure injection by function, assertion messages that say what every stage did, and the
actors given back to the real broker afterwards."""
import dramatiq
import pytest
from django.db import transaction
from django.test import TestCase, TransactionTestCase

from pipeline import emit
from pipeline._definitions import registry
from pipeline.models import Run
from pipeline.testing import PipelinesTestMixin, run_pipelines
from tests.testapp import pipelines as testapp


class InATestCase(PipelinesTestMixin, TestCase):
    def test_an_emit_in_the_tests_transaction_runs_once_drained(self):
        with transaction.atomic():
            event_id = emit("test.started", {"value": 2})
        run = Run.objects.get(event_id=event_id)
        self.assertEqual(run.status, "pending")  # nothing moves until drained
        view = self.pipelines.run_of(event_id).assert_succeeded()
        self.assertEqual(view.result("third")["value"], 31)

    def test_an_emit_rolled_back_publishes_nothing(self):
        with self.assertRaises(RuntimeError):
            with transaction.atomic():
                emit("test.started", {"value": 2})
                raise RuntimeError("the caller's work failed")
        self.pipelines.drain()
        self.assertFalse(Run.objects.exists())
        self.assertEqual(self.pipelines.logs("event.published"), [])


class InATransactionTestCase(PipelinesTestMixin, TransactionTestCase):
    def test_the_worker_commits_on_its_own_connection(self):
        run = self.pipelines.run_of(self.pipelines.emit("test.diamond", {"n": 1})).assert_succeeded()
        self.assertEqual(run.result("join"), {"sum": 5, "parents": ["left", "right"]})


def test_a_stage_named_by_its_function_fails_as_told_then_runs_as_declared(pipelines):
    injected = pipelines.fail(testapp.unreliable, times=2, exc=ConnectionError)
    run = pipelines.run_of(pipelines.emit("test.flaky", {}))
    run.assert_succeeded().assert_stage("unreliable", attempts=3, result={"attempt": 3})
    assert injected.calls == 3 and injected.failed == 2
    assert run.stage("unreliable").errors == ["ConnectionError: ", "ConnectionError: "]


def test_a_function_used_by_several_stages_must_be_named(pipelines):
    from tests.testapp.pipelines import _sleep_then_record

    with pytest.raises(LookupError, match="name one as 'pipeline.stage'"):
        pipelines.fail(_sleep_then_record)
    with pytest.raises(LookupError, match="no stage 'three_stages.fourth'"):
        pipelines.fail("three_stages.fourth")


def test_a_failed_assertion_says_what_every_stage_did(pipelines):
    pipelines.fail("flaky.unreliable", times=None, exc=ValueError("down"))
    run = pipelines.run_of(pipelines.emit("test.flaky", {}))
    with pytest.raises(AssertionError) as caught:
        run.assert_succeeded()
    message = str(caught.value)
    assert "is failed" in message and "prepare: succeeded after 1 attempt(s)" in message
    assert "unreliable: failed after 3 attempt(s) (ValueError: down)" in message
    with pytest.raises(AssertionError, match="has no stage 'finish'"):
        run.stage("finish")


def test_injected_failures_and_the_actors_broker_are_undone_when_it_closes(db):
    real = dramatiq.get_broker()
    stage = registry.get("flaky").stages["unreliable"]
    declared = stage.fn
    with run_pipelines() as pipelines:
        pipelines.fail("flaky.unreliable")
        assert stage.fn is not declared and stage.actor.broker is pipelines.broker
    assert stage.fn is declared and stage.actor.broker is real and dramatiq.get_broker() is real


def test_the_pytest_plugin_loads_before_django_is_configured():
    """pytest loads `pipeline.testing.plugin` (its entry point) before pytest-django configures
    Django, in every project that installs the package: nothing it imports may need the models."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", "import pipeline.testing.plugin"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
