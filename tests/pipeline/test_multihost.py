"""Three hosts made of Linux network namespaces: the broker and the database on host A, one worker
on host B, one on host C, on a private /24 that exists only inside these namespaces. Host B's link
is cut in the middle of a run: RabbitMQ notices the silence after the heartbeat timeout and hands
B's unacknowledged stages to C, which finishes every run; no stage is recorded twice, and no stage
that had finished runs again.

Relies on: AMQP heartbeats (`heartbeat=5` in PIPELINE_BROKER_URL here, 30 s by default), the claim
rules in pipeline/_states.py (a redelivered message re-claims the stage its dead holder left
running), and PostgreSQL dropping a vanished client (TCP keepalives, idle_in_transaction timeout).
The database lives on host A, reached over the network like the broker, so the cut takes B off
both, as a real host failure would."""
from __future__ import annotations

import glob
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, ManagedProcess, log_dir, read_log_lines, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.store_independent]

SUBNET = "10.231.7"  # exists only inside the namespaces this test makes
HOST_A, HOST_B, HOST_C = f"{SUBNET}.1", f"{SUBNET}.2", f"{SUBNET}.3"
AMQP_PORT, PG_PORT = 5714, 5432  # inside host A's own network namespace
HEARTBEAT = 5
RUNS, STAGE_SECONDS = 10, 3.0


def _pg_bin() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return str(Path(os.path.realpath(found)).parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return str(Path(candidates[-1]).parent) if candidates else None


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip netns` (apt-get install iproute2)"
    probe = f"plmh-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` is not allowed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if _pg_bin() is None:
        return "needs PostgreSQL's server binaries for host A's database (infra/ensure-postgres.sh)"
    if not os.path.exists("/usr/lib/rabbitmq/bin/rabbitmq-server"):
        return "needs Debian's rabbitmq-server for host A's broker"
    return None


def sh(*args: str, timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


HELPER = r"""
import json, sys
import django
django.setup()
import pika
from django.db import close_old_connections
from django.db.models import Count
from pipeline import emit
from pipeline.models import Run, StageRun
from tests.testapp.models import SideEffect

def emit_runs(n, sleep):
    return [emit("test.killable", {"sleep": sleep}) for _ in range(n)]

def consumers(queue):
    connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()

def snapshot():
    return {
        "runs": {r.pop("status"): r["n"] for r in Run.objects.values("status").annotate(n=Count("id")).order_by()},
        "stages": list(StageRun.objects.values("run_id", "stage", "status", "attempts", "worker")),
        "effects": list(SideEffect.objects.values("run_id", "stage").annotate(n=Count("id")).order_by()),
    }

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    close_old_connections()
    call = json.loads(line)
    try:
        answer = {"ok": globals()[call["call"]](*call.get("args", []))}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer, default=str), flush=True)
"""


class Helper:
    """A Django process on host A that emits and reads the run store for the test (which lives in
    the root namespace, where host A's addresses do not exist)."""

    def __init__(self, ns: str, env: dict[str, str], broker_url: str) -> None:
        self._err = open(log_dir() / "multihost-helper.err", "ab")
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", HELPER, broker_url], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True, start_new_session=True,
        )
        assert self._read(60) == {"ready": True}

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the helper on host A did not answer within {timeout}s")
        line = self.popen.stdout.readline()
        if not line:
            raise AssertionError("the helper on host A exited; see multihost-helper.err")
        return json.loads(line)

    def call(self, name: str, *args, timeout: float = 30):
        self.popen.stdin.write(json.dumps({"call": name, "args": list(args)}) + "\n")
        self.popen.stdin.flush()
        answer = self._read(timeout)
        if "error" in answer:
            raise AssertionError(f"helper {name}: {answer['error']}")
        return answer["ok"]

    def stop(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)
        self._err.close()


class Hosts:
    """Namespaces A, B, C; A holds a bridge on SUBNET.0/24, B and C a veth each into it."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = {name: f"plmh-{name.lower()}-{tag}" for name in "ABC"}
        self.made: list[str] = []

    def up(self) -> None:
        a = self.ns["A"]
        for name in "ABC":
            sh("ip", "netns", "add", self.ns[name])
            self.made.append(self.ns[name])
            sh("ip", "-n", self.ns[name], "link", "set", "lo", "up")
        sh("ip", "-n", a, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", a, "addr", "add", f"{HOST_A}/24", "dev", "br0")
        sh("ip", "-n", a, "link", "set", "br0", "up")
        for name, address in (("B", HOST_B), ("C", HOST_C)):
            port = f"to-{name.lower()}"
            sh("ip", "-n", a, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", self.ns[name])
            sh("ip", "-n", a, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", self.ns[name], "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[name], "link", "set", "eth0", "up")

    def exec(self, name: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[name], *args]

    def cut(self, name: str) -> None:
        sh("ip", "-n", self.ns[name], "link", "set", "eth0", "down")

    def down(self) -> None:
        for ns in self.made:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in self.made:  # killed, not yet gone: a namespace is deleted once nothing runs in it
            deadline = time.monotonic() + 30
            while sh("ip", "netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
                time.sleep(0.1)
            sh("ip", "netns", "del", ns, check=False)


def start_database(hosts: Hosts, folder: Path) -> None:
    bin_dir = _pg_bin()
    data = folder / "pg" / "data"
    data.parent.mkdir()
    shutil.chown(data.parent, "postgres", "postgres")
    runuser = ["runuser", "-u", "postgres", "--"]
    sh(*runuser, f"{bin_dir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
       "--encoding=UTF8", "--locale=C.UTF-8")
    with open(data / "pg_hba.conf", "a") as hba:  # the test hosts' subnet, and nothing else
        hba.write(f"host all postgres {SUBNET}.0/24 trust\n")
    options = " ".join([
        f"-c listen_addresses={HOST_A},127.0.0.1", f"-p {PG_PORT}", f"-c unix_socket_directories={data}",
        # Notice a client host that vanished within seconds, and never let its open transaction hold
        # locks for long: the production settings infra/README.md recommends, shortened.
        "-c tcp_keepalives_idle=2", "-c tcp_keepalives_interval=1", "-c tcp_keepalives_count=3",
        "-c idle_in_transaction_session_timeout=5000", "-c fsync=off", "-c synchronous_commit=off",
    ])
    sh(*hosts.exec("A", *runuser, f"{bin_dir}/pg_ctl", "-D", str(data), "-o", options,
                   "-l", str(folder / "pg" / "postgres.log"), "-w", "-t", "60", "start"), timeout=90)
    sh(*hosts.exec("A", *runuser, f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(PG_PORT), "pipeline"))


def stop_database(hosts: Hosts, folder: Path) -> None:
    bin_dir = _pg_bin()
    if (folder / "pg" / "data" / "postmaster.pid").exists():
        sh(*hosts.exec("A", "runuser", "-u", "postgres", "--", f"{bin_dir}/pg_ctl", "-D", str(folder / "pg" / "data"),
                       "-m", "immediate", "-w", "stop"), check=False, timeout=60)


def broker_env(folder: Path) -> dict[str, str]:
    return dict(os.environ, RABBITMQ_PORT=str(AMQP_PORT), RABBITMQ_VAR=str(folder / "rabbitmq"),
                RABBITMQ_BIND="0.0.0.0", RABBITMQ_ALLOW_REMOTE_GUEST="1")


def started_lines(process: str) -> list[dict]:
    return [l for l in read_log_lines(f"{process}.jsonl") if l.get("event") == "stage.started"]


def when(line: dict) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def _every_step(*steps) -> None:
    """Runs every clean-up step even when one fails or is interrupted (pytest-timeout's alarm
    raises inside whichever step is running): the broker, PostgreSQL and the namespaces this test
    started must not outlive it. The first error is raised at the end."""
    first: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except BaseException as error:  # noqa: BLE001 (re-raised below, after the other steps)
            first = first or error
    if first is not None:
        raise first


# Two hosts in network namespaces, a broker, a cut and a heal: past the suite's 180 s default on a
# loaded machine (make test-under-load: the broker's stop in teardown was still running at 180 s).
@pytest.mark.timeout(600)
def test_a_worker_host_cut_off_mid_run_hands_its_stages_to_the_other_host_and_every_run_completes():
    reason = _why_skip()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="pipeline-multihost-", dir="/tmp"))
    folder.chmod(0o755)  # the postgres user must reach its data folder
    (folder / "multihost_settings.py").write_text(
        "from tests.settings import *  # noqa: F401,F403\n"
        "PIPELINE_STALLED_AFTER_SECONDS = 20.0  # the relay re-publishes a stage whose publish the cut lost\n"
        "PIPELINE_HEARTBEAT_SECONDS = 2.0\n"
    )
    broker_url = f"amqp://guest:guest@{HOST_A}:{AMQP_PORT}/%2F?heartbeat={HEARTBEAT}"
    database_url = f"postgres://postgres@{HOST_A}:{PG_PORT}/pipeline"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="multihost_settings", PYTHONPATH=str(folder),
               DATABASE_URL=database_url, PIPELINE_BROKER_URL=broker_url, PIPELINE_LOG_DIR=str(log_dir()),
               PYTHONUNBUFFERED="1")
    for process in ("worker-b", "worker-c"):
        (log_dir() / f"{process}.jsonl").unlink(missing_ok=True)
    hosts = Hosts()
    processes: list[ManagedProcess] = []
    helper = None
    broker_started = False
    try:
        hosts.up()
        broker = subprocess.Popen(hosts.exec("A", "infra/rabbitmq.sh", "start"), cwd=ROOT, env=broker_env(folder),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        broker_started = True
        start_database(hosts, folder)
        sh(*hosts.exec("A", sys.executable, "manage.py", "migrate", "--noinput"), cwd=ROOT, env=env, timeout=120)
        out, _ = broker.communicate(timeout=90)
        assert broker.returncode == 0, out

        relay = ManagedProcess("multihost-relay", hosts.exec("A", sys.executable, "manage.py", "relay"), env)
        processes.append(relay)
        workers = {}
        for name in "BC":
            process = f"worker-{name.lower()}"
            workers[name] = ManagedProcess(process, hosts.exec(
                name, sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4",
                "--worker-shutdown-timeout", "5000", "--queues", "killable"), dict(env, PIPELINE_PROCESS=process))
            processes.append(workers[name])
        helper = Helper(hosts.ns["A"], env, broker_url)
        wait_for(lambda: helper.call("consumers", "killable") >= 2, 60, "the workers on B and C to consume")

        helper.call("emit_runs", RUNS, STAGE_SECONDS)
        wait_for(lambda: any(l["stage"] == "slow" for l in started_lines("worker-b")), 30,
                 "host B to be in the middle of a slow stage")
        time.sleep(0.5)
        cut_at = time.time()
        hosts.cut("B")

        def all_finished():
            runs = helper.call("snapshot")["runs"]
            return sum(runs.values()) == RUNS and not runs.get("pending") and not runs.get("running")

        wait_for(all_finished, 60, f"all {RUNS} runs to finish on host C", interval=1)
        state = helper.call("snapshot")
    finally:
        def stop_processes():
            for process in processes:
                if process.name == "worker-b":
                    process.signal(signal.SIGKILL)  # cut off, maybe blocked on the lost database: no drain
                process.stop(timeout=10)

        def stop_broker():
            if broker_started:
                sh(*hosts.exec("A", "infra/rabbitmq.sh", "stop"), cwd=ROOT, env=broker_env(folder), check=False,
                   timeout=90)

        _every_step(stop_processes, helper.stop if helper is not None else None, stop_broker,
                    lambda: stop_database(hosts, folder), hosts.down, lambda: shutil.rmtree(folder, ignore_errors=True))

    assert state["runs"] == {"succeeded": RUNS}, state["runs"]
    on_b, on_c = started_lines("worker-b"), started_lines("worker-c")
    b_workers, c_workers = {l["worker"] for l in on_b}, {l["worker"] for l in on_c}
    stages = {(s["run_id"], s["stage"]): s for s in state["stages"]}
    assert len(stages) == 3 * RUNS and all(s["status"] == "succeeded" for s in stages.values())
    recorded_by_b = {key for key, row in stages.items() if row["worker"] in b_workers}
    assert recorded_by_b, "host B finished nothing before the cut: the test did not exercise two hosts"

    # No stage recorded twice: one row per stage (a constraint), and host C never records a stage
    # twice, nor one that host B had recorded.
    c_succeeded = [(l["run_id"], l["stage"]) for l in read_log_lines("worker-c.jsonl")
                   if l.get("event") == "stage.succeeded"]
    assert len(c_succeeded) == len(set(c_succeeded))
    assert not set(c_succeeded) & recorded_by_b

    # The stages B was running when its link went: C ran them again after the heartbeat timeout.
    cut_off = {(l["run_id"], l["stage"]) for l in on_b} - recorded_by_b
    assert cut_off, "host B had no stage in flight when its link was cut"
    for key in cut_off:
        row = stages[key]
        assert row["worker"] in c_workers and row["attempts"] == 2, (key, row)
        [taken_over] = [l for l in on_c if (l["run_id"], l["stage"]) == key]
        waited = when(taken_over) - cut_at
        # Redelivered once RabbitMQ gave up on B's silent connection (two missed heartbeats), long
        # before the stage's 90 s lease would have let the relay re-publish it.
        assert HEARTBEAT <= waited < 45, f"{key} was taken over {waited:.1f}s after the cut"

    # Nothing that had finished ran again: every other stage ran exactly once.
    effects = {(e["run_id"], e["stage"]): e["n"] for e in state["effects"]}
    for key, row in stages.items():
        if key in cut_off:
            assert 1 <= effects.get(key, 0) <= 2, (key, effects.get(key))
        else:
            assert row["attempts"] == 1 and effects.get(key) == 1, (key, row, effects.get(key))
