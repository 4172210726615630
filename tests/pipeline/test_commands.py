"""Command-line contracts: exit codes and one-line errors."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT, child_env


def manage(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env or child_env("sqlite:///var/cli-test.sqlite3"),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.broker  # a real process (the slow tier)
def test_emit_with_an_unknown_type_exits_2_with_one_line():
    result = manage("emit", "order.shipped", "--data", '{"order_id": 1}')
    assert result.returncode == 2
    error_lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(error_lines) == 1 and "unknown event type 'order.shipped'" in error_lines[0]


@pytest.mark.broker  # a real process (the slow tier)
def test_emit_with_invalid_json_exits_2():
    result = manage("emit", "order.placed", "--data", "{not json")
    assert result.returncode == 2 and "--data is not valid JSON" in result.stderr


@pytest.mark.broker  # a real process (the slow tier)
def test_emit_with_an_invalid_payload_exits_2_naming_the_field():
    result = manage("emit", "order.placed", "--data", '{"order_id": 1}')
    assert result.returncode == 2 and "customer_email: Field required" in result.stderr


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.django_db(transaction=True)
def test_emit_prints_the_event_id(test_database_url):
    from pipeline.models import Event

    result = manage("emit", "test.started", "--data", '{"value": 4}', env=child_env(test_database_url))
    assert result.returncode == 0, result.stderr
    assert Event.objects.get(id=result.stdout.strip()).payload == {"value": 4, "fail_times": 0}


@pytest.mark.broker  # a real process (the slow tier)
def test_workers_with_an_unreachable_broker_fail_with_one_clear_line():
    env = child_env("sqlite:///var/cli-test.sqlite3", PIPELINE_BROKER_URL="amqp://guest:guest@127.0.0.1:1/%2F")
    result = manage("rundramatiq", "--processes", "1", "--threads", "1", env=env, timeout=60)
    assert result.returncode == 1
    error_lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(error_lines) == 1, result.stderr
    assert "cannot reach RabbitMQ at amqp://127.0.0.1:1/" in error_lines[0]
    assert "infra/rabbitmq.sh start" in error_lines[0] and "Traceback" not in result.stderr


@pytest.mark.django_db
def test_emit_with_priority_urgent_stores_an_urgent_event_and_refuses_other_priorities(capsys):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from pipeline.models import Event

    call_command("emit", "test.started", "--data", '{"value": 4}', "--priority", "urgent")
    assert Event.objects.get(id=capsys.readouterr().out.strip()).priority == "urgent"
    with pytest.raises(CommandError, match="invalid choice: 'high'"):
        call_command("emit", "test.started", "--priority", "high")
