"""Reaching the broker: several nodes in PIPELINE_BROKER_URL, the queue type, publisher confirms,
long delays in hops. Broker-backed tests use the suite's test node."""
from __future__ import annotations

import subprocess
import sys
import uuid

import pika
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis
from dramatiq.middleware import SkipMessage

from pipeline._broker import BrokerUnavailable, broker_urls, check_broker, publish_confirms, queue_type, redacted_url
from pipeline.middleware import LongDelays
from pipeline.rabbitmq import NOT_BEFORE, PipelineBroker, QueueTypeMismatch
from tests.conftest import ROOT, child_env

DEAD = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens on port 1


def test_broker_url_lists_nodes_separated_by_commas_or_whitespace_in_order():
    assert broker_urls("amqp://u:p@a:5672/%2F, amqp://u:p@b:5673/%2F\n amqp://u:p@c:5674/%2F") == [
        "amqp://u:p@a:5672/%2F", "amqp://u:p@b:5673/%2F", "amqp://u:p@c:5674/%2F"]
    assert redacted_url("amqp://u:secret@a:5672/%2F,amqp://u:secret@b:5673/%2F") == (
        "amqp://a:5672/, amqp://b:5673/")


def test_a_broker_url_that_is_not_amqp_is_refused_naming_the_variable_and_hiding_the_password():
    with pytest.raises(ImproperlyConfigured) as refused:
        broker_urls("amqp://u:p@a:5672/%2F, http://u:secret@b:15672/")
    assert "PIPELINE_BROKER_URL" in str(refused.value) and "secret" not in str(refused.value)


@pytest.mark.broker  # a real process (the slow tier)
def test_the_broker_connects_to_the_first_node_that_answers():
    check_broker(f"{DEAD}, {settings.PIPELINE_BROKER_URL}", timeout=2)
    broker = PipelineBroker(url=f"{DEAD},{settings.PIPELINE_BROKER_URL}")
    try:
        assert [p.port for p in broker.parameters] == [1, pika.URLParameters(settings.PIPELINE_BROKER_URL).port]
        assert all(p.heartbeat == 30 for p in broker.parameters)
        assert broker.connection.is_open  # pika went past the dead node
    finally:
        broker.close()


def test_when_no_node_answers_the_error_names_each_of_them():
    with pytest.raises(BrokerUnavailable) as failed:
        check_broker(f"{DEAD} amqp://guest:guest@127.0.0.1:2/%2F", timeout=1)
    message = str(failed.value)
    assert "amqp://127.0.0.1:1/" in message and "amqp://127.0.0.1:2/" in message and "guest" not in message


@pytest.mark.parametrize("value, expected", [(None, "classic"), ("quorum", "quorum"), (" Classic ", "classic")])
def test_queue_type_defaults_to_classic(monkeypatch, value, expected):
    monkeypatch.delenv("PIPELINE_QUEUE_TYPE", raising=False)
    if value is not None:
        monkeypatch.setenv("PIPELINE_QUEUE_TYPE", value)
    assert queue_type() == expected


@pytest.mark.broker  # a real process (the slow tier)
def test_an_unknown_queue_type_stops_the_process_at_start_naming_the_variable():
    env = child_env("sqlite:///var/cli-test.sqlite3", PIPELINE_QUEUE_TYPE="mirrored")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "PIPELINE_QUEUE_TYPE='mirrored': use classic or quorum" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("kind, confirms, expected", [
    ("classic", None, False), ("quorum", None, True), ("quorum", "0", False), ("classic", "yes", True)])
def test_publisher_confirms_default_to_on_with_quorum_queues_only(monkeypatch, kind, confirms, expected):
    monkeypatch.setenv("PIPELINE_QUEUE_TYPE", kind)
    if confirms is None:
        monkeypatch.delenv("PIPELINE_PUBLISH_CONFIRMS", raising=False)
    else:
        monkeypatch.setenv("PIPELINE_PUBLISH_CONFIRMS", confirms)
    assert publish_confirms() is expected
    assert PipelineBroker(url=settings.PIPELINE_BROKER_URL).confirm_delivery is expected


def test_a_bad_publish_confirms_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("PIPELINE_PUBLISH_CONFIRMS", "maybe")
    with pytest.raises(ImproperlyConfigured, match="PIPELINE_PUBLISH_CONFIRMS='maybe'"):
        publish_confirms()


def _redeclare(name: str, arguments: dict) -> int | None:
    """Declares `name` with other arguments: None if RabbitMQ accepts them, else its reply code."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.PIPELINE_BROKER_URL))
    try:
        connection.channel().queue_declare(queue=name, durable=True, arguments=arguments)
        return None
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc.reply_code
    finally:
        if connection.is_open:
            connection.close()


def _delete(*names: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.PIPELINE_BROKER_URL))
    try:
        for name in names:
            connection.channel().queue_delete(queue=name)
    finally:
        connection.close()


@pytest.mark.broker
def test_quorum_declares_the_stage_delay_and_dead_letter_queues_as_quorum_queues_with_a_delivery_limit():
    name = f"quorum-test-{uuid.uuid4().hex[:8]}"
    broker = PipelineBroker(url=settings.PIPELINE_BROKER_URL, queue_type="quorum")
    try:
        broker.declare_queue(name, ensure=True)
        assert broker._build_queue_arguments(name) == {
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}.XQ", "x-queue-type": "quorum",
            "x-delivery-limit": 20}
        for queue in (name, f"{name}.DQ", f"{name}.XQ"):
            # A queue's type is fixed: asking for a classic one under that name is refused (406).
            assert _redeclare(queue, {"x-queue-type": "classic"}) == 406, queue
        assert _redeclare(name, broker._build_queue_arguments(name)) is None  # same arguments: accepted
    finally:
        broker.close()
        _delete(name, f"{name}.DQ", f"{name}.XQ")


@pytest.mark.broker
def test_a_classic_queue_is_not_changed_to_quorum_in_place_and_the_error_says_how_to_migrate():
    name = f"classic-test-{uuid.uuid4().hex[:8]}"
    classic = PipelineBroker(url=settings.PIPELINE_BROKER_URL, queue_type="classic")
    quorum = PipelineBroker(url=settings.PIPELINE_BROKER_URL, queue_type="quorum")
    try:
        classic.declare_queue(name, ensure=True)
        with pytest.raises(QueueTypeMismatch) as refused:
            quorum.declare_queue(name, ensure=True)
        assert f"queue {name!r} already exists" in str(refused.value)
        assert "Moving from classic to quorum queues" in str(refused.value)
    finally:
        classic.close()
        quorum.close()
        _delete(name, f"{name}.DQ", f"{name}.XQ")


def test_quorum_refuses_a_max_priority():
    with pytest.raises(ImproperlyConfigured, match="x-max-priority"):
        PipelineBroker(url=settings.PIPELINE_BROKER_URL, queue_type="quorum", max_priority=5)


def test_a_delay_longer_than_a_worker_may_hold_is_published_in_hops(monkeypatch):
    sent = []
    monkeypatch.setattr(RabbitmqBroker, "enqueue", lambda self, message, *, delay=None: sent.append((message, delay)))
    monkeypatch.setenv("PIPELINE_MAX_HELD_DELAY_SECONDS", "60")
    broker = PipelineBroker(url=settings.PIPELINE_BROKER_URL)
    message = Message(queue_name="pipeline", actor_name="a", args=(), kwargs={}, options={})

    broker.enqueue(message, delay=3_600_000)  # one hour
    held, delay = sent[-1]
    assert delay == 60_000
    assert held.options[NOT_BEFORE] == pytest.approx(current_millis() + 3_600_000, abs=5_000)

    broker.enqueue(message, delay=30_000)  # short: held by the worker as Dramatiq does
    assert sent[-1] == (message, 30_000)


def test_a_message_that_comes_due_before_its_real_time_is_published_again_and_skipped():
    class Recorder:
        def __init__(self):
            self.sent = []

        def enqueue(self, message, *, delay=None):
            self.sent.append((message, delay))

    broker = Recorder()
    early = Message(queue_name="pipeline", actor_name="a", args=(), kwargs={},
                    options={NOT_BEFORE: current_millis() + 600_000, "run_id": "r"})
    with pytest.raises(SkipMessage):
        LongDelays().before_process_message(broker, early)
    assert broker.sent[0][1] == pytest.approx(600_000, abs=5_000)

    due = Message(queue_name="pipeline", actor_name="a", args=(), kwargs={}, options={NOT_BEFORE: current_millis() - 1})
    LongDelays().before_process_message(broker, due)  # due: processed, nothing published
    assert len(broker.sent) == 1


@pytest.mark.broker
def test_a_worker_given_several_nodes_works_on_the_first_that_answers(transactional_db, test_database_url):
    from pipeline import emit
    from pipeline.models import Run
    from tests.conftest import ManagedProcess, PYTHON, purge_queues, queue_state, wait_for

    purge_queues("pipeline")
    worker = ManagedProcess(
        "worker-two-nodes",
        [PYTHON, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4", "--queues", "pipeline"],
        child_env(test_database_url, PIPELINE_BROKER_URL=f"{DEAD}, {settings.PIPELINE_BROKER_URL}"))
    try:
        wait_for(lambda: (queue_state("pipeline") or (0, 0))[1] >= 1, 60, "the worker to consume")
        run_ids = [Run.objects.get(event_id=emit("test.started", {"value": i})).id for i in range(5)]
        wait_for(lambda: Run.objects.filter(id__in=run_ids, status="succeeded").count() == 5, 60, "5 runs")
    finally:
        worker.stop()


@pytest.mark.broker
def test_a_worker_asked_for_quorum_queues_where_classic_ones_exist_stops_at_start_with_one_line():
    name = f"classic-test-{uuid.uuid4().hex[:8]}"
    classic = PipelineBroker(url=settings.PIPELINE_BROKER_URL, queue_type="classic")
    try:
        classic.declare_queue(name, ensure=True)
        classic.close()
        env = child_env("sqlite:///var/cli-test.sqlite3", PIPELINE_QUEUE_TYPE="quorum")
        result = subprocess.run([sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--queues", name],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        _delete(name, f"{name}.DQ", f"{name}.XQ")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith("CommandError: queue") and "cannot change type in place" in errors[-1], errors[-3:]
