"""Fixtures: real worker and scheduler processes against the test database and the test broker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pika
import pytest
from django.conf import settings

from tests.openapi_contract import api_responses_match_the_document  # noqa: F401  (autouse: every API answer)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STAGE_QUEUE = "pipeline"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls until `predicate` is truthy; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def log_dir() -> Path:
    return Path(os.environ.get("PIPELINE_LOG_DIR", ROOT / "var" / "test-log"))


class ManagedProcess:
    """A child process in its own session, its output in a file, always stopped at the end."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.name = name
        out_dir = log_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        self.output_path = out_dir / f"{name}.out"
        self._out = open(self.output_path, "wb")
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # the leader only: it stops its own children
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(10)
        # Worker children of a killed master may outlive it: sweep the whole group.
        self.signal(signal.SIGKILL)
        self._out.close()


def child_env(database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url,
        PIPELINE_BROKER_URL=settings.PIPELINE_BROKER_URL,
        PIPELINE_LOG_DIR=str(log_dir()),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PIPELINE_PROCESS", None)
    env.update(extra)
    return env


def amqp_channel():
    from pipeline.broker import connection_parameters

    connection = pika.BlockingConnection(connection_parameters(settings.PIPELINE_BROKER_URL))
    return connection, connection.channel()


def queue_state(name: str = STAGE_QUEUE) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue, or None when it does not exist yet."""
    connection, channel = amqp_channel()
    try:
        frame = channel.queue_declare(queue=name, passive=True)
        return frame.method.message_count, frame.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return None
    finally:
        if connection.is_open:
            connection.close()


def purge_queues(*names: str) -> None:
    connection, channel = amqp_channel()
    try:
        for name in names:
            for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                try:
                    channel.queue_purge(queue)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = connection.channel()
    finally:
        connection.close()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    return (
        f"postgres://{params['USER']}:{params.get('PASSWORD') or ''}@{params.get('HOST') or '127.0.0.1'}:"
        f"{params.get('PORT') or 5432}/{params['NAME']}"
    )


def start_worker(
    database_url: str, name: str = "worker", processes: int = 2, threads: int = 8, queue: str = STAGE_QUEUE,
    own_log: bool = False,
) -> ManagedProcess:
    """A real `rundramatiq` on `queue`; with `own_log`, its JSON lines go to `<log dir>/<name>.jsonl`."""
    extra = {"PIPELINE_PROCESS": name} if own_log else {}
    process = ManagedProcess(
        name,
        [PYTHON, "manage.py", "rundramatiq", "--processes", str(processes), "--threads", str(threads),
         "--worker-shutdown-timeout", "5000", "--queues", queue],
        child_env(database_url, **extra),
    )
    try:
        wait_for(lambda: (queue_state(queue) or (0, 0))[1] >= processes, 60, f"{name} to consume from {queue}")
    except AssertionError:
        process.stop()
        raise AssertionError(f"worker did not start; its output:\n{process.output()[-3000:]}")
    return process


@pytest.fixture(scope="session")
def worker(test_database_url):
    """One real `rundramatiq` (2 processes x 8 threads, queue `pipeline`) for the whole session."""
    purge_queues(STAGE_QUEUE)
    process = start_worker(test_database_url)
    yield process
    process.stop()


@pytest.fixture
def live_worker(worker, transactional_db):
    """A running worker and a database whose commits it can see; queues purged of earlier tests."""
    purge_queues(STAGE_QUEUE)
    return worker


@pytest.fixture
def api_token(db) -> str:
    from web.api.models import ApiToken

    return ApiToken.issue("tests")[1]


def read_log_lines(pattern: str = "*.jsonl") -> list[dict]:
    import json

    lines = []
    for path in sorted(log_dir().glob(pattern)):
        for raw in path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                pass
    return lines


@pytest.fixture(scope="session", autouse=True)
def _group_commit_writer_closed_at_the_end(django_db_setup):
    """The test process's group-commit writer holds a connection of its own: closed before the
    test database is dropped (PostgreSQL refuses to drop a database somebody is connected to)."""
    yield
    from pipeline import writer

    writer.close()


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite twice, on SQLite then on PostgreSQL; a test that brings its own
    database (the multi-host test, the benchmark smoke run) proves nothing more the second time."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return
    skip = pytest.mark.skip(reason="independent of the run store: run in the SQLite pass of make test")
    for item in items:
        if item.get_closest_marker("store_independent"):
            item.add_marker(skip)
