"""`make run`'s process manager (infra/run-stack.sh, infra/supervise.py): a process that dies is
restarted while the others keep running; Ctrl-C drains the workers (one SIGTERM each), stops the
broker last and exits 0 — also under `make`, in a terminal."""
from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from infra.supervise import group_alive
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.store_independent]  # its own broker node and SQLite file

# Ports of this test's own stack (the test broker of infra/test.sh is left alone).
BROKER_PORT = int(os.environ.get("TEST_STACK_RABBITMQ_PORT", "5713"))
WEB_PORT = int(os.environ.get("TEST_STACK_WEB_PORT", "8731"))
WORKER_METRICS_PORT = int(os.environ.get("TEST_STACK_WORKER_METRICS_PORT", "8732"))
SCHEDULER_METRICS_PORT = int(os.environ.get("TEST_STACK_SCHEDULER_METRICS_PORT", "8733"))


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def answers(url: str) -> requests.Response | None:
    try:
        response = requests.get(url, timeout=5)
        return response if response.ok else None
    except requests.RequestException:
        return None


def started_pids(output: str, name: str) -> list[int]:
    """The pids the supervisor reported for `name`, in order (`<name> started (pid N)`)."""
    marker = f"| {name} started (pid "
    return [int(line.split(marker)[1].split(")")[0]) for line in output.splitlines() if marker in line]


def stage_consumers(url: str) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue="pipeline", passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def stack_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIPELINE_BROKER_URL", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PIPELINE_PROCESS",
                        "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        RABBITMQ_PORT=str(BROKER_PORT), RABBITMQ_VAR=str(tmp_path / "rabbitmq"),
        PIPELINE_VAR_DIR=str(tmp_path / "var"), PIPELINE_LOG_DIR=str(tmp_path / "log"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        WEB_PORT=str(WEB_PORT), PIPELINE_WORKER_METRICS_PORT=str(WORKER_METRICS_PORT),
        PIPELINE_SCHEDULER_METRICS_PORT=str(SCHEDULER_METRICS_PORT),
        WORKER_SHUTDOWN_TIMEOUT_MS="15000", SHOP_FAILURE_RATE="0", PYTHONUNBUFFERED="1",
    )
    return env


def test_a_killed_worker_is_restarted_and_ctrl_c_drains_every_worker_stops_the_broker_last_and_exits_0(
    stack_env, tmp_path
):
    out_path = tmp_path / "stack.out"
    with open(out_path, "wb") as out:
        stack = subprocess.Popen(["infra/run-stack.sh"], cwd=ROOT, env=stack_env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    broker_url = f"amqp://guest:guest@127.0.0.1:{BROKER_PORT}/%2F"
    web, metrics = f"http://127.0.0.1:{WEB_PORT}", f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics"
    output = lambda: out_path.read_text(errors="replace")  # noqa: E731
    groups: set[int] = set()
    try:
        try:
            wait_for(lambda: answers(f"{web}/healthz"), 120, "the web process to answer")
            wait_for(lambda: answers(metrics), 60, "the workers' metrics endpoint on its fixed port")
            wait_for(lambda: stage_consumers(broker_url) >= 2, 60, "both worker processes to consume")
        except AssertionError:
            raise AssertionError(output()[-4000:])
        [web_pid], [first_master] = started_pids(output(), "web"), started_pids(output(), "worker")
        [scheduler_pid] = started_pids(output(), "scheduler")
        groups |= {web_pid, first_master, scheduler_pid}
        # (each asked until it answers: one request may miss its 5 s on a loaded machine)
        scraped = wait_for(lambda: answers(metrics), 60, "the workers' metrics endpoint")
        assert scraped.headers["Content-Type"].startswith("text/plain")  # Prometheus's text format
        web_metrics = wait_for(lambda: answers(f"{web}/metrics"), 60, "the web process's metrics")
        assert f"127.0.0.1:{WORKER_METRICS_PORT}/metrics" in web_metrics.text  # web says where

        # A worker process is SIGKILLed: its master stops, the supervisor restarts the worker.
        victim = wait_for(lambda: children(first_master), 30, "the worker master's processes")[0]
        os.kill(victim, signal.SIGKILL)
        restarted = wait_for(lambda: started_pids(output(), "worker")[1:], 60, "the worker to be restarted")
        groups.add(restarted[0])
        assert "| worker exited (code 1)" in output() and "restarting in 1 s" in output()
        wait_for(lambda: not group_alive(first_master), 30, "the first worker generation to be gone")
        wait_for(lambda: stage_consumers(broker_url) >= 2 and len(children(restarted[0])) >= 2, 60,
                 "the restarted worker's processes to consume")
        assert stack.poll() is None
        wait_for(lambda: answers(f"{web}/healthz"), 60, "the web process to answer after the restart")
        assert started_pids(output(), "web") == [web_pid]  # web kept running
        assert started_pids(output(), "scheduler") == [scheduler_pid]
        assert subprocess.run(["infra/rabbitmq.sh", "status"], cwd=ROOT, env=stack_env,
                              capture_output=True).returncode == 0  # the broker too
        drained_before = len(drained_lines(tmp_path))
        second_generation = set(children(restarted[0]))

        # Ctrl-C.
        os.kill(stack.pid, signal.SIGINT)
        assert stack.wait(90) == 0, output()[-4000:]
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(10)
        for pgid in groups:
            if group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        subprocess.run(["infra/rabbitmq.sh", "stop"], cwd=ROOT, env=stack_env, capture_output=True)

    text = output()
    drained = drained_lines(tmp_path)[drained_before:]
    assert {line["pid"] for line in drained} >= second_generation, text[-4000:]  # each worker process drained
    assert all(line["abandoned"] == 0 for line in drained)
    assert "Killing worker process" not in text  # nobody got a second SIGTERM
    assert not any(group_alive(pgid) for pgid in groups)  # no process left
    assert subprocess.run(["infra/rabbitmq.sh", "status"], cwd=ROOT, env=stack_env,
                          capture_output=True).returncode == 3
    broker_stop = text.index("| running: infra/rabbitmq.sh stop")
    assert text.rfind("worker.drained") < broker_stop  # the broker stopped last
    assert "| stopped" in text[broker_stop:]


def drained_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "log" / "worker.jsonl"
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if line.get("event") == "worker.drained":
            lines.append(line)
    return lines


def test_ctrl_c_in_a_terminal_reaches_the_supervisor_alone_and_make_exits_0(tmp_path):
    """A terminal sends Ctrl-C's SIGINT to its whole foreground process group: `make` too, which
    would die of it (`make: *** [Makefile:…: run] Error 130`) whatever its recipe does."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    procfile = tmp_path / "Procfile"
    procfile.write_text("sleeper: sleep 120\n")
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"run:\n\t@{sys.executable} {ROOT / 'infra' / 'supervise.py'} -f {procfile} "
                        f"--finally 'echo finally-ran'\n")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvp("make", ["make", "-s", "-f", str(makefile), "run"])
    output = b""

    def read_until(marker: bytes, timeout: float) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    return

    try:
        read_until(b"sleeper started", 30)
        assert b"sleeper started" in output, output
        os.killpg(os.tcgetpgrp(fd), signal.SIGINT)  # what the terminal does on Ctrl-C
        read_until(b"| stopped", 30)
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Error 130" not in text and "Interrupt" not in text
    assert "SIGINT: stopping sleeper" in text and "finally-ran" in text


def test_a_bad_procfile_is_refused_with_exit_code_2_naming_the_line(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("web: sleep 1\nthis line has no name\n")
    done = subprocess.run([sys.executable, str(ROOT / "infra" / "supervise.py"), "-f", str(procfile)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "line 2: expected 'name: command'" in done.stderr
