"""Fixtures: real worker and scheduler processes against the test database and the test broker."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pika
import structlog
import pytest
from django.conf import settings

from tests.in_hand import held
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


def http_ok(url: str) -> bool:
    """Whether a server answers `url` with a 2xx: the readiness probe for a web process a test
    started. Any failure (refused, reset, slow to answer while the app loads) is "not yet"."""
    import requests

    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


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
    from pipeline._broker import connection_parameters

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
    own_log: bool = False, env: dict[str, str] | None = None,
) -> ManagedProcess:
    """A real `rundramatiq` on `queue`; with `own_log`, its JSON lines go to `<log dir>/<name>.jsonl`."""
    extra = {"PIPELINE_PROCESS": name} if own_log else {}
    extra.update(env or {})
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


class SharedWorker:
    """A `rundramatiq` that several tests share (the session's, a module's): started on first use,
    started again after a test had to stop it. Its processes say how many messages they hold
    (tests/in_hand.py), for `shared_workers_idle`. Everything else is the `ManagedProcess`'s."""

    def __init__(self, database_url: str, name: str, queue: str, **options: Any) -> None:
        self.database_url, self.name, self.queue, self.options = database_url, name, queue, options
        self.in_hand = log_dir() / "in-hand" / name
        self.process: ManagedProcess | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None

    def ensure_started(self) -> SharedWorker:
        if not self.running():
            if self.process is not None:
                self.process.stop()
            shutil.rmtree(self.in_hand, ignore_errors=True)
            self.process = start_worker(self.database_url, self.name, queue=self.queue,
                                        env={"TEST_IN_HAND_DIR": str(self.in_hand)}, **self.options)
            _shared_workers.append(self)
            wait_for(lambda: self.holds() is not None, 60, f"{self.name} to say what it holds (tests/in_hand.py)")
        return self

    def holds(self) -> int | None:
        return held(self.in_hand)

    def stop(self) -> None:
        if self in _shared_workers:
            _shared_workers.remove(self)
        if self.process is not None:
            self.process.stop()

    def __getattr__(self, name: str) -> Any:
        if name == "process" or self.process is None:
            raise AttributeError(name)
        return getattr(self.process, name)


_shared_workers: list[SharedWorker] = []


def _ready(channel: Any, queues: set[str]) -> tuple[Any, int]:
    """Messages ready in `queues` (AMQP) on `channel`; a queue not declared (yet) holds none. Returns
    the channel to go on with (the broker closes a channel on a passive declare of a missing queue)."""
    total = 0
    for name in sorted(queues):
        try:
            total += channel.queue_declare(queue=name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            channel = channel.connection.channel()
    return channel, total


def shared_workers_idle(timeout: float = 120) -> bool:
    """Whether the running shared workers became idle within `timeout`: nothing ready on their
    queues (and delay queues) and no message in their hands (being processed, or a retry held
    until its time), three times in a row a quarter of a second apart (a message just delivered
    waits a moment before a worker thread takes it, and one moving from a queue to a worker or
    back is in one place or the other). False at once when the broker does not answer.

    One AMQP connection for all the looks (opening one per look cost more than the look, on
    every transactional test's teardown).

    Also what a test waits on instead of a fixed sleep when it checks that something did *not*
    happen (a duplicate dropped, no stage after a cancel): once idle, it would have happened."""
    workers = [w for w in _shared_workers if w.running()]
    if not workers:
        return True
    queues = {q for w in workers for q in (w.queue, f"{w.queue}.DQ")}
    deadline = time.monotonic() + timeout
    try:
        connection, channel = amqp_channel()
    except pika.exceptions.AMQPError:
        return False
    try:
        quiet = 0
        while time.monotonic() < deadline:
            channel, ready = _ready(channel, queues)
            quiet = quiet + 1 if ready == 0 and all(not w.holds() for w in workers) else 0
            if quiet >= 3:
                return True
            connection.sleep(0.25)  # pika's own sleep: the connection keeps answering heartbeats
        return False
    except pika.exceptions.AMQPError:
        return False
    finally:
        if connection.is_open:
            connection.close()


def _flushes_its_database(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    marked = bool(marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))
    return marked or "transactional_db" in request.fixturenames or "live_server" in request.fixturenames


@pytest.fixture(autouse=True)
def _shared_workers_idle_before_the_flush(request):
    """Every test whose database is flushed at its end (transactional ones) first waits for the
    shared workers to be idle (`shared_workers_idle`), whether it used them or not: what it
    committed may have published work to them (a backfill, a schedule, an outcome).

    Why: the flush is a TRUNCATE on PostgreSQL; a worker still writing what the test started
    deadlocks with it (DeadlockDetected in the teardown), or writes into the next test's data."""
    if not _flushes_its_database(request):
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up before, so torn down (flushed) after this
    yield
    if not shared_workers_idle():
        # Still busy after two minutes (or the broker is down): stopped rather than left writing
        # during the flush; the next test that needs one starts it again.
        for shared in list(_shared_workers):
            shared.stop()


@pytest.fixture(scope="session")
def worker(test_database_url):
    """One real `rundramatiq` (2 processes x 8 threads, queue `pipeline`) shared by the session."""
    purge_queues(STAGE_QUEUE)
    shared = SharedWorker(test_database_url, "worker", STAGE_QUEUE).ensure_started()
    yield shared
    shared.stop()


@pytest.fixture
def live_worker(worker, transactional_db):
    """A running worker and a database whose commits it can see; queues purged of earlier tests.
    The worker is idle again before the test's data is flushed (`_shared_workers_idle_before_the_flush`)."""
    purge_queues(STAGE_QUEUE)
    return worker.ensure_started()


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


@pytest.fixture(autouse=True)
def _store_up_as_far_as_this_process_knows():
    """The run store's outage state is one per process (`pipeline._store_health.outage`): a test that
    saw the store go down and came back without a commit of its own (the test process of
    tests/test_store_outage.py) would leave the next test an outage already said."""
    from pipeline import _store_health as store_health

    store_health.outage.forget()
    yield
    store_health.outage.forget()


@pytest.fixture(autouse=True)
def _empty_logging_context():
    """structlog's context (run, stage, trace ids) belongs to the thread that bound it: a test that
    runs a stage on the test's own thread (no Dramatiq middleware to clear it) would lend its
    `stage` and `pipeline` to the next test's log lines (an `event.emitted` with a stage, on
    PostgreSQL, depending on the order of the files)."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture(scope="session", autouse=True)
def _group_commit_writer_closed_at_the_end(django_db_setup):
    """The test process's group-commit writer holds a connection of its own: closed before the
    test database is dropped (PostgreSQL refuses to drop a database somebody is connected to)."""
    yield
    from pipeline import _writer as writer

    writer.close()


# The broker tier's files that `make test` runs in a second session of each pass, beside the first
# (infra/test.sh sets TEST_BROKER_SHARD=first|second, each session with its own broker node and test
# database), so that no session holds the whole tier: chosen by their measured wall time, so the two
# end at about the same time. The store-outage test stays in the first (it stops the PostgreSQL
# server on TEST_PGPORT, the first session's). The fast tier and unsplit runs ignore this.
SECOND_BROKER_SESSION = frozenset({
    "tests/pipeline/test_drain.py",
    "tests/pipeline/test_durability.py",
    "tests/pipeline/test_multihost.py",
    "tests/schedules/test_scheduler.py",
    "tests/test_bench_smoke.py",
    "tests/test_from_nothing.py",
    "tests/web/test_dashboard_browser.py",
    "tests/web/test_live_updates.py",
    "tests/web/test_shop_browser.py",
})


def _deselected_by_broker_shard(items: list) -> list:
    shard = os.environ.get("TEST_BROKER_SHARD")
    if shard not in ("first", "second"):
        return []
    return [item for item in items if item.get_closest_marker("broker") is not None
            and (item.nodeid.split("::")[0] in SECOND_BROKER_SESSION) != (shard == "second")]


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite twice, on SQLite and on PostgreSQL; a test that does not use the
    run store (it brings its own database, or none) proves nothing more the second time, so it
    runs in one pass: the SQLite pass, or the PostgreSQL pass when it is marked
    `store_independent(run_in="postgres")` and infra/test.sh runs both passes (TEST_BOTH_PASSES=1;
    it moves long ones there so that the two passes, which run at the same time, end together)."""
    on_postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    both = os.environ.get("TEST_BOTH_PASSES") == "1"
    in_sqlite = pytest.mark.skip(reason="independent of the run store: run in the SQLite pass of make test")
    in_postgres = pytest.mark.skip(reason="independent of the run store: run in the PostgreSQL pass of make test")
    for item in items:
        marker = item.get_closest_marker("store_independent")
        if marker is None:
            continue
        wants_postgres = both and marker.kwargs.get("run_in") == "postgres"
        if on_postgres and not wants_postgres:
            item.add_marker(in_sqlite)
        elif not on_postgres and wants_postgres:
            item.add_marker(in_postgres)
    deselected = _deselected_by_broker_shard(items)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        dropped = set(deselected)
        items[:] = [item for item in items if item not in dropped]
