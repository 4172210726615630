"""Probes: `/healthz` (the web process is up), `/readyz` (its database and broker answer), and
`manage.py workerhealth` (this host's worker processes beat), each usable by Kubernetes."""
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from pipeline.models import WorkerHeartbeat
from tests.conftest import ROOT, child_env, wait_for


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_answers_200_without_touching_the_database_or_the_broker(client, settings):
    settings.PIPELINE_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    response = client.get("/healthz")  # no `db` fixture: any query would fail the test
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.django_db
def test_readyz_is_200_when_the_database_and_the_broker_answer(client):
    # Each check has a 2 s bound, which a broker on a loaded machine may miss once: asked again.
    response = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, 30, "/readyz to answer 200")
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_it_cannot_be_reached(client, settings):
    port = closed_port()
    settings.PIPELINE_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False
    assert f"127.0.0.1:{port}" in body["checks"]["broker"]["error"]
    assert "guest" not in body["checks"]["broker"]["error"]  # no credentials in a probe's answer


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_fails(client, monkeypatch):
    from django.db import connection

    def broken(*args, **kwargs):
        raise OperationalError("connection to server at 10.0.0.9 failed: Connection refused")

    monkeypatch.setattr(connection, "cursor", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == {"ok": False, "error": body["checks"]["database"]["error"],
                                          "error_type": "OperationalError", "ms": body["checks"]["database"]["ms"]}
    assert "Connection refused" in body["checks"]["database"]["error"]
    assert body["checks"]["broker"]["ok"] is True


def workerhealth(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "workerhealth", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=child_env(database_url, **env))


def beat(host: str, age: float, stopped: bool = False) -> WorkerHeartbeat:
    now = timezone.now()
    return WorkerHeartbeat.objects.create(
        host=host, pid=4242, queues=["pipeline"], started_at=now - timedelta(hours=1),
        last_seen=now - timedelta(seconds=age), stopped_at=now if stopped else None,
    )


@pytest.mark.broker  # a real process (the slow tier)
def test_workerhealth_fails_without_a_fresh_heartbeat_from_this_host(transactional_db, test_database_url):
    beat("probe-host", age=120)  # silent for two minutes
    beat("probe-host", age=1, stopped=True)  # stopped cleanly
    beat("another-host", age=1)
    result = workerhealth(test_database_url, "--host", "probe-host")
    assert result.returncode == 1, result
    assert "unhealthy: 0 worker process(es) on probe-host" in result.stderr


# Where freshness is not the point, `--max-age` is long: on a busy machine the command itself can
# take longer to start than the default 15 s, and a beat written just before would look silent.
FRESH_ENOUGH = ("--max-age", "600")


@pytest.mark.broker  # a real process (the slow tier)
def test_workerhealth_counts_the_processes_it_needs(transactional_db, test_database_url):
    beat("probe-host", age=2)
    assert workerhealth(test_database_url, "--host", "probe-host", *FRESH_ENOUGH).returncode == 0
    result = workerhealth(test_database_url, "--host", "probe-host", "--min-processes", "2", *FRESH_ENOUGH)
    assert result.returncode == 1 and "(need 2)" in result.stderr
    beat("probe-host", age=3)
    ok = workerhealth(test_database_url, "--host", "probe-host", "--min-processes", "2", *FRESH_ENOUGH)
    assert ok.returncode == 0, ok.stderr
    assert "healthy: 2 worker process(es) on probe-host" in ok.stdout


@pytest.mark.broker  # a real process (the slow tier)
def test_workerhealth_with_broker_fails_when_the_broker_is_unreachable(transactional_db, test_database_url):
    beat(socket.gethostname(), age=1)
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    result = workerhealth(test_database_url, "--broker", *FRESH_ENOUGH, PIPELINE_BROKER_URL=url)
    assert result.returncode == 1
    assert "cannot reach RabbitMQ" in result.stderr
    assert workerhealth(test_database_url, *FRESH_ENOUGH, PIPELINE_BROKER_URL=url).returncode == 0  # liveness: heartbeat only


@pytest.mark.broker  # a real process (the slow tier)
def test_workerhealth_bad_usage_exits_2(test_database_url):
    assert workerhealth(test_database_url, "--max-age", "0").returncode == 2


@pytest.mark.broker
def test_workerhealth_passes_for_a_real_worker_on_this_host(live_worker, test_database_url):
    wait_for(lambda: WorkerHeartbeat.objects.filter(host=socket.gethostname(), stopped_at__isnull=True).count() >= 2,
             30, "both worker processes to beat")
    result = workerhealth(test_database_url, "--min-processes", "2", "--broker")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy: ")


@pytest.mark.django_db
def test_readyz_keeps_the_brokers_answer_for_a_moment_instead_of_connecting_per_request(client, monkeypatch):
    """Probes (or anyone: the endpoint needs no login) calling /readyz in a loop cost one AMQP
    connection per BROKER_CACHE_SECONDS, not one per request; the answer is the same."""
    from web import health

    calls = []
    monkeypatch.setattr(health, "check_broker", lambda url, timeout: calls.append(url))
    monkeypatch.setattr(health, "_broker_result", {})
    clock = [1000.0]
    monkeypatch.setattr(health, "_clock", lambda: clock[0])
    bodies = [client.get("/readyz").json() for _ in range(20)]
    assert len(calls) == 1
    assert all(b["status"] == "ready" and b["checks"]["broker"]["ok"] for b in bodies)
    clock[0] += health.BROKER_CACHE_SECONDS + 0.1  # older than the cache: checked again
    assert client.get("/readyz").status_code == 200 and len(calls) == 2
