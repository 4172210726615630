"""`make bench`: our pipelines against the broker floor, raw Dramatiq, Celery and the like-for-like
peers (Celery + django-celery-results, django_dramatiq + AdminMiddleware), on the local RabbitMQ.

    .venv/bin/python -m tests.bench.run [--rounds 3] [--budget-seconds 1020] [--skip-celery] [--skip-postgres]
    .venv/bin/python -m tests.bench.run --smoke        # a handful of runs, one round: checks it all works
    .venv/bin/python -m tests.bench.run --only ours_sqlite,ours_sqlite_empty,ours_sqlite_1m --shapes 2x8

For each worker shape (2 processes x 8 threads, then 2 x 1) every system gets its workers started,
a warm-up and a calibration (which sizes its measurements to `--target-seconds`), then rounds
interleave the systems (A/B/C/A/B/C...): a throughput measurement (N runs started as fast as the
producer can, until N done-signals arrived), the workers' resident memory, and a slice of the
low-load latency samples (one run in flight at a time). CPU per run is the CPU time used by the
workers, the producer, the broker (and PostgreSQL for that store) during the measurement / N.
The like-for-like peers are measured with the first shape only (`phase` in systems.py), which is
where their ratios are taken.

After the first shape's rounds, with its workers, the figures of cost as work grows (`scaling`
in the results): 3, 10 and 30-stage chains (with and without inline chains), a 64 KiB payload,
a fan-out of 100 and of 1,000 branches into one fan-in (emit -> fan-in start, CPU per branch,
fan-in started once), and CPU per run with 1,000,000 runs already stored vs an empty store
(its own worker sets; the seeded store is made once and cached, see tests/bench/seed.py).

The table goes to stdout, progress to stderr, and everything to `<work dir>/latest.json`."""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pika

if __package__ in (None, ""):  # run as a script: make `tests.bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench import report as reporting
from tests.bench.common import (
    ROOT,
    BenchError,
    Child,
    Producer,
    amqp_connection,
    broker_version,
    declare_done_queue,
    direct_children,
    drain_done,
    listening_pid,
    queue_consumers,
    redacted,
    spread,
    stop_all,
    tree_cpu_seconds,
)
from tests.bench.payload import BIG_PAYLOAD_BYTES
from tests.bench import writer_stats
from tests.bench.systems import System, build_systems, celery_available, celery_results_available, env_without_bench

PY = sys.executable
STAGES = 3
CHAIN_LENGTHS = (3, 10, 30)
PACKAGES = ["dramatiq", "pika", "Django", "django-dramatiq", "structlog", "pydantic", "celery", "kombu", "amqp",
            "django-celery-results", "psycopg", "psutil", "py-spy"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tests/bench/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round, shape 2x8 only: checks it all works")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per shape (default 3; smoke 1)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="wall-time budget of the whole run; measurements shrink to fit (default 1020; smoke 50)")
    p.add_argument("--target-seconds", type=float, default=10.0, help="wanted length of one throughput measurement")
    p.add_argument("--shapes", default=None, help="worker shapes, processes x threads (default 2x8,2x1; smoke 2x8)")
    p.add_argument("--latency-runs", type=int, default=None, help="low-load latency samples per system (default 200)")
    p.add_argument("--latency-all-shapes", action="store_true",
                   help="sample latency with every shape (default: the first shape only)")
    p.add_argument("--skip-celery", action="store_true", help="leave Celery out (it is left out anyway when not installed)")
    p.add_argument("--skip-postgres", action="store_true", help="leave the PostgreSQL run store out")
    p.add_argument("--skip-extras", action="store_true",
                   help="leave out the scaling figures (chains, fan-out, 64 KiB payload, 1M stored runs)")
    p.add_argument("--stored-runs", type=int, default=None,
                   help="runs already in the store of the stored-runs figure (default 1000000; smoke 2000); 0: leave it out")
    p.add_argument("--extra-rounds", type=int, default=None, help="rounds of the scaling figures (default 2; smoke 1)")
    p.add_argument("--extra-seconds", type=float, default=None,
                   help="length of one scaling throughput measurement (default 5; smoke 0.5)")
    p.add_argument("--only", default=None, help="comma-separated system keys to run (floor, dramatiq, ...)")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="after the first shape, profile our workers (--profile-system) under load with py-spy for SECONDS "
                        "(BENCH_PYSPY_MODE=native: C frames, where stages wait)")
    p.add_argument("--profile-system", default="ours_sqlite", help="the system --profile samples (default ours_sqlite)")
    p.add_argument("--work-dir", default=None, help="logs, SQLite database, results (default var/bench)")
    p.add_argument("--out", default=None, help="results JSON (default <work dir>/latest.json; smoke: smoke.json)")
    p.add_argument("--broker-url", default=os.environ.get("PIPELINE_BROKER_URL"),
                   help="an existing broker (default: PIPELINE_BROKER_URL, else a local node on --rabbitmq-port)")
    p.add_argument("--rabbitmq-port", type=int, default=int(os.environ.get("BENCH_RABBITMQ_PORT", "5692")))
    p.add_argument("--pg-port", type=int, default=int(os.environ.get("BENCH_PGPORT", "5499")))
    p.add_argument("--queue-prefix", default=None, help="queue names start with this (default bench; smoke bench_smoke)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.smoke else 3)
    args.budget_seconds = args.budget_seconds or (50.0 if args.smoke else 1020.0)
    args.stored_runs = args.stored_runs if args.stored_runs is not None else (2000 if args.smoke else 1_000_000)
    args.extra_rounds = args.extra_rounds or (1 if args.smoke else 2)
    args.extra_seconds = args.extra_seconds or (0.5 if args.smoke else 5.0)
    args.shapes = args.shapes or ("2x8" if args.smoke else "2x8,2x1")
    args.latency_runs = args.latency_runs if args.latency_runs is not None else (5 if args.smoke else 200)
    args.queue_prefix = args.queue_prefix or ("bench_smoke" if args.smoke else "bench")
    try:
        args.shape_list = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",") if s.strip()]
        assert all(len(s) == 2 and s[0] > 0 and s[1] > 0 for s in args.shape_list)
    except (ValueError, AssertionError):
        p.error(f"--shapes {args.shapes!r}: expected e.g. 2x8,2x1")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_seconds
        self.work_dir = Path(args.work_dir or ROOT / "var" / "bench").resolve()
        self.out_path = Path(args.out).resolve() if args.out else self.work_dir / ("smoke.json" if args.smoke else "latest.json")
        self.log_dir = self.work_dir / "processes"
        self.started_broker = False
        self.started_postgres = False
        self.broker_url = ""
        self.broker_pid: int | None = None
        self.pg_pid: int | None = None
        self.producers: dict[str, Producer] = {}
        self.workers: dict[str, list[Child]] = {}
        self.systems: list[System] = []
        self.notes: list[str] = []
        self.skipped: dict[str, str] = {}
        self.seq: dict[str, int] = {}
        self.produced: dict[str, int] = {}
        self.results: dict[str, dict[str, dict]] = {}
        self.machine: dict[str, Any] = {}
        self.profile: dict[str, Any] | None = None
        self.truncated = False
        self.shapes_total = len(args.shape_list)
        # Low-load latency (one run in flight) does not depend on the pool size: by default it is
        # sampled with the first shape only, which leaves the budget to the throughput figures.
        self.latency_shapes = set(range(self.shapes_total)) if args.latency_all_shapes else {0}
        self.extras: dict[str, Any] | None = None
        self.extras_reserve = 0.0  # seconds kept for the scaling figures while the first shape is planned
        self.stored_store: dict[str, Any] | None = None

    # --- progress ---------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=sys.stderr, flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def left_main(self) -> float:
        """What the interleaved rounds may use: the budget left, less what the scaling figures need."""
        return self.left() - self.extras_reserve

    # --- infrastructure ---------------------------------------------------------------------------

    def prepare_dirs(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for path in [*self.work_dir.glob("log-*"), self.log_dir]:
            if path.is_dir():
                for f in path.glob("*"):
                    if f.is_file():
                        f.unlink()
        for pattern in ("ours.sqlite3*", "ours-*.sqlite3*", "celery_results.sqlite3*", "dj_dramatiq.sqlite3*"):
            for f in self.work_dir.glob(pattern):
                f.unlink()
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def script(self, args: list[str], env: dict[str, str], log_name: str, timeout: float) -> subprocess.CompletedProcess:
        with open(self.log_dir / log_name, "ab") as out:
            return subprocess.run(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout)

    def ensure_broker(self) -> None:
        if self.args.broker_url:
            self.broker_url = self.args.broker_url
            self.say(f"broker: using {redacted(self.broker_url)}")
        else:
            port = self.args.rabbitmq_port
            env = {**os.environ, "RABBITMQ_PORT": str(port)}
            status = self.script(["infra/rabbitmq.sh", "status"], env, "rabbitmq.out", 60)
            self.started_broker = status.returncode != 0
            self.say(f"broker: {'starting' if self.started_broker else 'reusing'} the local node on port {port}")
            result = self.script(["infra/rabbitmq.sh", "start"], env, "rabbitmq.out", 150)
            if result.returncode != 0:
                tail = (self.log_dir / "rabbitmq.out").read_text(errors="replace")[-2000:]
                raise BenchError(f"infra/rabbitmq.sh start failed (exit {result.returncode}):\n{tail}")
            self.broker_url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        parsed = urlparse(self.broker_url)
        if parsed.hostname in ("127.0.0.1", "localhost", "::1"):
            self.broker_pid = listening_pid(parsed.port or 5672)
        if self.broker_pid is None:
            self.notes.append("broker CPU not counted (broker process not found on this machine)")

    def ensure_postgres(self) -> str | None:
        if self.args.skip_postgres:
            self.skipped["ours_pg"] = "--skip-postgres"
            return None
        try:
            import psycopg
        except ImportError:
            self.skipped["ours_pg"] = "psycopg not installed"
            return None
        port = self.args.pg_port
        env = {**os.environ, "PGPORT": str(port)}
        status = self.script(["infra/postgres.sh", "status"], env, "postgres.out", 30)
        if status.returncode == 2:
            self.skipped["ours_pg"] = "PostgreSQL server binaries not installed"
            return None
        self.started_postgres = status.returncode != 0
        self.say(f"postgres: {'starting' if self.started_postgres else 'reusing'} the local cluster on port {port}")
        result = self.script(["infra/postgres.sh", "start"], env, "postgres.out", 120)
        if result.returncode != 0:
            self.started_postgres = self.started_postgres and result.returncode != 2
            tail = (self.log_dir / "postgres.out").read_text(errors="replace")[-1500:]
            self.skipped["ours_pg"] = f"infra/postgres.sh start failed: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
            self.say(f"postgres: could not start, PostgreSQL left out\n{tail}")
            return None
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench WITH (FORCE)")
            conn.execute("CREATE DATABASE bench")
        self.pg_pid = listening_pid(port)
        return f"postgres://postgres@127.0.0.1:{port}/bench"

    def migrate(self, databases: list[tuple[str, dict[str, str]]]) -> None:
        """`manage.py migrate` for each (name, environment), side by side."""
        procs = []
        for name, env in databases:
            procs.append((name, Child(f"{name}-migrate", [PY, "manage.py", "migrate", "--noinput"], env, self.log_dir)))
        for name, child in procs:
            try:
                rc = child.popen.wait(120)
            except subprocess.TimeoutExpired:
                rc = -1
            child.wait_stopped(5)
            if rc != 0:
                raise BenchError(f"migrate for {name} failed:\n{child.tail()}")

    def prepare_stored(self, template: Path) -> None:
        """The stores of the stored-runs figure, from a freshly migrated template: an empty copy,
        and a copy of the cached seeded store (seeded now if this schema has none yet)."""
        from tests.bench import seed

        t = time.monotonic()
        keys = {s.key for s in self.systems}
        if "ours_sqlite_empty" in keys:
            seed.copy_db(template, self.work_dir / "ours-empty.sqlite3")
        if "ours_sqlite_1m" in keys:
            path, info = seed.cached_store(template, self.work_dir, self.args.stored_runs, self.say)
            t_copy = time.monotonic()
            seed.copy_db(path, self.work_dir / "ours-1m.sqlite3")
            self.stored_store = {**info, "file": path.name, "copy_seconds": round(time.monotonic() - t_copy, 1)}
            self.say(f"setup: seeded store {path.name} ({'cached' if info['cached'] else 'made now'}, "
                     f"{info['bytes'] / 2**30:.2f} GiB) copied in {self.stored_store['copy_seconds']:.1f}s")
        self.say(f"setup: stored-runs stores ready in {time.monotonic() - t:.1f}s")

    def start_producers(self, systems: list[System]) -> None:
        for s in systems:
            child = Child(f"{s.key}-producer", s.producer_args(), {**s.child_env(os.environ), "PIPELINE_PROCESS": "producer"},
                          self.log_dir, pipe_stdin=True, pipe_stdout=True)
            self.producers[s.key] = Producer(child)
            self.seq[s.key] = 0
            self.produced[s.key] = 0
        for s in systems:
            info = self.producers[s.key].wait_ready(90)
            if not info.get("ready"):
                raise BenchError(f"producer {s.key} did not start: {info.get('error')}\n{info.get('traceback', '')}")

    def start_workers(self, systems: list[System], processes: int, threads: int) -> float:
        t = time.monotonic()
        for s in systems:
            if s.has_workers:
                env = s.child_env(os.environ)
                self.workers[s.key] = [Child(name, argv, env, self.log_dir) for name, argv in s.worker_commands(processes, threads)]
        pending = {s.key: s for s in systems if s.has_workers}
        deadline = time.monotonic() + 150
        while pending:
            for key, s in list(pending.items()):
                dead = [c for c in self.workers[key] if not c.alive()]
                if dead:
                    raise BenchError(f"{key} worker exited while starting:\n{dead[0].tail()}")
            counts = queue_consumers(self.broker_url, [s.queue for s in pending.values()])
            for key, s in list(pending.items()):
                if counts.get(s.queue, 0) >= s.consumers_expected(processes):
                    del pending[key]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"workers not consuming after 150s: {sorted(pending)}")
            time.sleep(0.5)
        return time.monotonic() - t

    def stop_workers(self, keys: list[str] | None = None) -> None:
        keys = list(self.workers) if keys is None else [k for k in keys if k in self.workers]
        stop_all([c for k in keys for c in self.workers[k]], timeout=20)
        for k in keys:
            del self.workers[k]

    def cleanup(self) -> None:
        try:
            self.stop_workers()
        except Exception as exc:  # noqa: BLE001 - keep cleaning up
            self.say(f"stopping workers: {exc}")
        for key, producer in list(self.producers.items()):
            try:
                producer.send({"cmd": "quit"})
            except Exception:  # noqa: BLE001
                pass
        stop_all([p.child for p in self.producers.values()], timeout=10)
        self.producers.clear()
        if self.started_postgres:
            self.say("postgres: stopping the cluster this run started")
            self.script(["infra/postgres.sh", "stop"], {**os.environ, "PGPORT": str(self.args.pg_port)}, "postgres.out", 90)
            self.started_postgres = False
        # The copy of the seeded store (~2 GB) is made again by the next run from the cached file.
        for f in self.work_dir.glob("ours-1m.sqlite3*"):
            try:
                f.unlink()
            except OSError:
                pass
        if self.started_broker:
            self.say("broker: stopping the node this run started")
            self.script(["infra/rabbitmq.sh", "stop"], {**os.environ, "RABBITMQ_PORT": str(self.args.rabbitmq_port)},
                        "rabbitmq.out", 120)
            self.started_broker = False

    # --- measurements -----------------------------------------------------------------------------

    def cpu_snapshot(self, s: System) -> dict[str, float]:
        snap = {
            "workers": tree_cpu_seconds([c.pid for c in self.workers.get(s.key, [])]),
            "producer": tree_cpu_seconds([self.producers[s.key].child.pid]),
        }
        if self.broker_pid:
            snap["broker"] = tree_cpu_seconds([self.broker_pid])
        if s.db == "postgresql" and self.pg_pid:
            snap["db"] = tree_cpu_seconds([self.pg_pid])
        return snap

    def writer_snapshot(self, s: System) -> dict[str, float] | None:
        """Our writers' counters (tests/bench/writer_stats.py), summed over the system's processes."""
        folder = s.env.get("BENCH_WRITER_STATS_DIR")
        return writer_stats.snapshot(folder) if folder else None

    def throughput(self, s: System, seconds: float, rate_hint: float, warmup: int = 0, stall: float = 30.0,
                   concurrency: int = 16, variant: str | None = None, stages: int = STAGES,
                   backlog_runs: int | None = None) -> dict:
        """Starts runs for `seconds` and waits until all of them are done (their done-signals).

        Closed loop: the producer is fed small chunks while fewer than `backlog` runs are in
        flight, so the broker never holds more than about half a second of work and the
        measurement lasts `seconds` (plus that tail) whatever the system's speed. The floor
        publishes for about half of `seconds`, then consumes everything it published."""
        producer = self.producers[s.key]
        if self.args.smoke:
            # A smoke run checks the machinery on whatever machine runs the tests, busy ones too: a
            # system that is merely slow there is waited for, only one that stopped is an error.
            stall = max(stall, 120.0)
        writer0 = writer1 = None  # our writers' counters (the floor and the peers have none)
        if s.kind == "floor":
            if warmup:
                producer.call({"cmd": "floor", "messages": warmup * STAGES}, timeout=120)
            cpu0 = self.cpu_snapshot(s)
            t = time.monotonic()
            reply = producer.call({"cmd": "floor", "messages": 2_000_000, "seconds": seconds}, timeout=120 + seconds * 3)
            elapsed = time.monotonic() - t
            cpu1 = self.cpu_snapshot(s)
            n = reply["messages"] // STAGES
            producer_s = reply["publish_s"]
        else:
            chunk = max(2, min(200, int(rate_hint * 0.1)))
            backlog = backlog_runs or max(4 * concurrency, int(rate_hint * 0.5), 2 * chunk)
            extra = {"variant": variant} if variant else {}
            connection = amqp_connection(self.broker_url)
            try:
                channel = connection.channel()
                declare_done_queue(channel, s.done_queue)
                channel.queue_purge(s.done_queue)
                if warmup:
                    producer.send({"cmd": "produce", "n": warmup, "start": self._seq(s, warmup), **extra})
                    drain_done(channel, s.done_queue, warmup, stall, on_idle=producer.check_failed)
                    producer.receive(60)
                writer0 = self.writer_snapshot(s)
                cpu0 = self.cpu_snapshot(s)
                t = time.monotonic()
                n = done = 0
                asked = 0  # produce commands not answered yet
                producer_s = 0.0
                last_done = t
                messages = channel.consume(s.done_queue, auto_ack=True, inactivity_timeout=0.02)
                while True:
                    now = time.monotonic()
                    # At least one chunk, however late this loop got the CPU: a measurement of no
                    # runs is none (it divided by zero on a busy machine).
                    producing = n == 0 or now - t < seconds
                    if producing and asked < 2 and n - done < backlog:
                        producer.send({"cmd": "produce", "n": chunk, "start": self._seq(s, chunk), **extra})
                        n += chunk
                        asked += 1
                    for reply in producer.replies():
                        asked -= 1
                        producer_s += reply["seconds"]
                    method, _props, _body = next(messages)
                    if method is not None:
                        done += 1
                        last_done = time.monotonic()
                    if not producing and done >= n:
                        break  # (the last one may have come while the producer was still busy)
                    if method is None and time.monotonic() - last_done > stall:
                        raise BenchError(f"{done}/{n} runs done, none for {stall:.0f}s")
                elapsed = last_done - t
                cpu1 = self.cpu_snapshot(s)
                writer1 = self.writer_snapshot(s)
                channel.cancel()
                while asked > 0:
                    producer_s += producer.receive(60)["seconds"]
                    asked -= 1
            except pika.exceptions.AMQPError as exc:
                raise BenchError(f"broker connection of the driver: {exc!r}") from None
            finally:
                if connection.is_open:
                    connection.close()
        cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
        writer = writer_stats.delta(writer0, writer1, elapsed, n) if writer0 and writer1 else None
        return {
            "runs": n,
            "seconds": elapsed,
            "runs_per_s": n / elapsed,
            "stage_msgs_per_s": n * stages / elapsed,
            "cpu_ms_per_run": sum(cpu.values()) / n * 1000,
            "cpu_breakdown_ms_per_run": {k: v / n * 1000 for k, v in cpu.items()},
            "producer_runs_per_s": n / producer_s if producer_s else None,
            "writer": writer,
        }

    def _seq(self, s: System, n: int) -> int:
        start = self.seq[s.key]
        self.seq[s.key] += n
        self.produced[s.key] += n
        return start

    def latency(self, s: System, n: int, warmup: int) -> list[float]:
        if s.kind == "floor" or n <= 0:
            return []
        reply = self.producers[s.key].call({"cmd": "latency", "n": n, "warmup": warmup}, timeout=30 + n * 5)
        self.produced[s.key] += n + warmup
        return reply["ms"]

    # --- one shape --------------------------------------------------------------------------------

    def run_shape(self, index: int, processes: int, threads: int) -> None:
        shape = f"{processes}x{threads}"
        args = self.args
        systems = [s for s in self.systems if (s.has_workers or index == 0)
                   and (s.phase == "main" or (s.phase == "first" and index == 0))]
        results = self.results.setdefault(shape, {})
        for s in systems:
            results[s.key] = {"label": s.label, "key": s.key, "shape_note": s.shape_note(processes, threads),
                              "rounds": [], "latency_samples_ms": [], "errors": []}
        self.say(f"shape {shape}: starting workers for {', '.join(s.key for s in systems if s.has_workers)}")
        startup = self.start_workers(systems, processes, threads)
        self.say(f"shape {shape}: workers ready in {startup:.1f}s")
        concurrency = processes * threads
        warmup = 2 if args.smoke else max(8, 2 * concurrency)
        rate: dict[str, float] = {}
        lat_est: dict[str, float] = {}
        failed: set[str] = set()
        t_cal = time.monotonic()
        for s in systems:
            try:
                if args.smoke:
                    rate[s.key], lat_est[s.key] = 20.0, 0.05
                    continue
                guess = 2000.0 if s.kind == "floor" else 100.0
                first = self.throughput(s, 0.7, guess, warmup=warmup, concurrency=concurrency)
                second = self.throughput(s, 1.5, first["runs_per_s"], concurrency=concurrency)
                rate[s.key] = second["runs_per_s"]
                lat = self.latency(s, 3, 1) if index in self.latency_shapes else []
                lat_est[s.key] = (sum(lat) / len(lat) / 1000) if lat else 0.0
                self.say(f"  calibrated {s.key}: ~{rate[s.key]:.0f} runs/s"
                         + (f", ~{lat_est[s.key] * 1000:.0f} ms/run in isolation" if lat else ""))
            except BenchError as exc:
                failed.add(s.key)
                results[s.key]["errors"].append(f"calibration: {exc}")
                self.say(f"  {s.key} FAILED in calibration: {exc}")
        calibration = time.monotonic() - t_cal

        rounds = args.rounds
        lat_rounds = index in self.latency_shapes
        lat_per_round = math.ceil(args.latency_runs / rounds) if (args.latency_runs and lat_rounds) else 0
        active = [s for s in systems if s.key not in failed]
        # Before each measurement a short warm-up (idle connections re-opened, caches warm).
        warmups = {s.key: warmup if args.smoke else max(8, min(warmup, int(rate[s.key] * 0.3))) for s in active}
        overhead = {
            s.key: 0.5 + warmups[s.key] / max(rate[s.key], 1.0) + (lat_per_round + 2) * lat_est[s.key] * 1.2
            for s in active
        }
        later = self.shapes_total - index - 1
        n_worker_systems = len([s for s in active if s.has_workers])
        # What the later shapes will need besides their measurements: starting workers, calibrating.
        later_fixed = later * (startup * 1.2 + calibration * (n_worker_systems / max(1, len(active))) + 5)
        later_meas = later * rounds * n_worker_systems
        later_overhead = later * rounds * sum(overhead[s.key] for s in active if s.has_workers) * 0.6
        teardown = 20.0

        def seconds_for(s: System, remaining_here: float, count_here: int) -> float:
            if args.smoke:
                return 0.5
            left = self.left_main() - later_fixed - later_overhead - teardown - remaining_here
            return max(2.0, min(args.target_seconds, left / max(1, count_here + later_meas)))

        self.say(f"shape {shape}: {rounds} round(s) of {len(active)} systems, "
                 f"~{seconds_for(active[0], sum(overhead.values()) * rounds, rounds * len(active)) if active else 0:.1f}s "
                 f"per throughput measurement, {lat_per_round} latency samples per round")
        for r in range(rounds):
            for i, s in enumerate(active):
                if s.key in failed:
                    continue
                count_here = (rounds - r) * len(active) - i
                remaining_here = sum(overhead[x.key] for x in active) * (rounds - r) - sum(
                    overhead[x.key] for x in active[:i])
                seconds = seconds_for(s, remaining_here, count_here)
                if not args.smoke and self.left_main() - teardown - overhead[s.key] - later_fixed < 2.0:
                    self.truncated = True
                    self.say(f"  budget: skipping {s.key} round {r + 1}")
                    continue
                try:
                    m = self.throughput(s, seconds, rate[s.key], warmup=warmups[s.key], concurrency=concurrency)
                    m["rss"] = s.worker_rss([c.pid for c in self.workers.get(s.key, [])]) if s.has_workers else None
                    lat = self.latency(s, lat_per_round, 2 if r == 0 else 1)
                    results[s.key]["rounds"].append(m)
                    results[s.key]["latency_samples_ms"].extend(lat)
                    rate[s.key] = m["runs_per_s"]
                    self.say(f"  round {r + 1} {s.key:21s} {m['runs_per_s']:8.1f} runs/s  {m['cpu_ms_per_run']:6.2f} ms CPU/run"
                             f"  {m['runs']:6d} runs in {m['seconds']:5.1f}s"
                             + (f"  lat p50 {sorted(lat)[len(lat) // 2]:.1f} ms" if lat else ""))
                except BenchError as exc:
                    failed.add(s.key)
                    results[s.key]["errors"].append(f"round {r + 1}: {exc}")
                    self.say(f"  {s.key} FAILED in round {r + 1}: {str(exc)[:400]}")
        if index == 0 and not args.skip_extras:
            t_extras = time.monotonic()
            try:
                self.run_extras(shape, processes, threads, rate)
            finally:
                self.extras_reserve = 0.0
            self.say(f"scaling figures: {time.monotonic() - t_extras:.0f}s")
        if args.profile and index == 0:
            self.run_profile(shape, concurrency)
        self.stop_workers()

    # --- the scaling figures (first shape, its workers) ----------------------------------------------

    def extras_plan(self) -> dict[str, Any]:
        args = self.args
        keys = {s.key for s in self.systems}
        chains = [k for k in ("ours_sqlite", "ours_sqlite_noinline") if k in keys]
        return {
            "chains": chains,
            "payload": "ours_sqlite" in keys,
            # (branches, measured runs, warm-up runs), one run in flight at a time
            "fan_out": ([] if "ours_sqlite" not in keys else
                        [(10, 2, 1), (100, 1, 0)] if args.smoke else [(100, 10, 1), (1000, 4, 1)]),
            "stored": [k for k in ("ours_sqlite_empty", "ours_sqlite_1m") if k in keys],
        }

    def extras_estimate(self) -> float:
        """Seconds the scaling figures take (about), kept out of the first shape's rounds."""
        args = self.args
        plan = self.extras_plan()
        per = args.extra_seconds + 0.8  # a closed-loop measurement: its seconds, then its tail
        measurements = len(CHAIN_LENGTHS) * len(plan["chains"]) + int(plan["payload"])
        total = measurements * (per * args.extra_rounds + 1.5)  # + the first warm-up of each
        total += sum(width * (runs + warm) * 0.002 + 2 for width, runs, warm in plan["fan_out"])
        if plan["stored"]:
            total += 12 + len(plan["stored"]) * (per * args.extra_rounds + 2)  # + starting their workers
        return total * 1.15

    def run_extras(self, shape: str, processes: int, threads: int, rate: dict[str, float]) -> None:
        """Chains of 3, 10 and 30 stages (ours, with and without inline chains), a 64 KiB payload,
        fan-outs into one fan-in, and CPU per run with many runs already stored vs none."""
        args = self.args
        concurrency = processes * threads
        plan = self.extras_plan()
        if not any(plan.values()):
            return
        by_key = {s.key: s for s in self.systems}
        shape_results = self.results.get(shape, {})

        def usable(key: str) -> bool:
            return key in by_key and key in self.workers and not shape_results.get(key, {}).get("errors")

        ex: dict[str, Any] = {"shape": shape, "rounds": args.extra_rounds, "seconds_per_measurement": args.extra_seconds,
                              "chains": {}, "payload_64k": None, "fan_out": {}, "stored_runs": None, "errors": []}
        self.extras = ex
        base_rate = {k: v for k, v in rate.items() if v}

        # Chains and the big payload: closed-loop throughput, interleaved, `extra_rounds` rounds.
        jobs = [(by_key[k], f"chain_{n}", n) for n in CHAIN_LENGTHS for k in plan["chains"] if usable(k)]
        if plan["payload"] and usable("ours_sqlite"):
            jobs.append((by_key["ours_sqlite"], "payload_64k", STAGES))
        est = {(s.key, v): max(1.0, base_rate.get(s.key, 50.0) * STAGES / n) for s, v, n in jobs}
        raw: dict[tuple[str, str], list[dict]] = {}
        failed: set[tuple[str, str]] = set()
        if jobs:
            self.say(f"scaling: {len(jobs)} chain/payload figures x {args.extra_rounds} round(s), "
                     f"{args.extra_seconds:.1f}s each")
        for r in range(args.extra_rounds):
            for s, variant, n in jobs:
                k = (s.key, variant)
                if k in failed:
                    continue
                first = k not in raw
                warm = max(2, min(concurrency, int(est[k] * 0.5))) if first else max(2, min(concurrency, int(est[k] * 0.2)))
                try:
                    m = self.throughput(s, args.extra_seconds, est[k], warmup=2 if args.smoke else warm, stall=60,
                                        concurrency=concurrency, variant=variant, stages=n,
                                        backlog_runs=max(2 * concurrency, int(est[k] * 0.5)))
                except BenchError as exc:
                    failed.add(k)
                    ex["errors"].append(f"{s.key} {variant} round {r + 1}: {exc}")
                    self.say(f"  {s.key} {variant} FAILED: {str(exc)[:300]}")
                    continue
                m["cpu_ms_per_stage"] = m["cpu_ms_per_run"] / n
                raw.setdefault(k, []).append(m)
                est[k] = m["runs_per_s"]
                self.say(f"  round {r + 1} {s.key:21s} {variant:12s} {m['runs_per_s']:8.1f} runs/s "
                         f"{m['cpu_ms_per_run']:7.2f} ms CPU/run {m['cpu_ms_per_stage']:6.2f} ms CPU/stage "
                         f"{m['runs']:5d} runs in {m['seconds']:4.1f}s")
        for (key, variant), ms in raw.items():
            summary = _summary(ms)
            if variant.startswith("chain_"):
                ex["chains"].setdefault(key, {})[variant.split("_", 1)[1]] = summary
            else:
                ex["payload_64k"] = {"system": key, "payload_bytes": BIG_PAYLOAD_BYTES, **summary}

        # Fan-out into one fan-in: one run in flight at a time.
        if plan["fan_out"] and usable("ours_sqlite"):
            s = by_key["ours_sqlite"]
            producer = self.producers[s.key]
            for width, n, warm in plan["fan_out"]:
                variant = f"fanout_{width}"
                try:
                    cpu0 = self.cpu_snapshot(s)
                    t = time.monotonic()
                    reply = producer.call({"cmd": "fanout", "variant": variant, "n": n, "warmup": warm, "timeout": 300},
                                          timeout=120 + (n + warm) * 300)
                    elapsed = time.monotonic() - t
                    cpu1 = self.cpu_snapshot(s)
                    self.produced[s.key] += n + warm
                    store = producer.call({"cmd": "fanin_check", "pipeline": f"bench_fanout_{width}"}, timeout=120)
                except BenchError as exc:
                    ex["errors"].append(f"fan-out {width}: {exc}")
                    self.say(f"  fan-out {width} FAILED: {str(exc)[:300]}")
                    continue
                cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
                runs = n + warm
                starts = reply["fanin_starts"]
                once = (starts["runs_started"] == runs and starts["max_per_run"] == 1
                        and store.get("fanin_by_status_attempts") == {"succeeded/1": store.get("runs")}
                        and store.get("fanin_rows") == store.get("runs"))
                ex["fan_out"][str(width)] = {
                    "branches": width, "runs": n, "warmup_runs": warm, "seconds": round(elapsed, 2),
                    "emit_to_fanin_start_ms": spread(reply["emit_to_fanin_start_ms"]),
                    "emit_to_done_ms": spread(reply["emit_to_done_ms"]),
                    "cpu_ms_per_branch": sum(cpu.values()) / (runs * width) * 1000,
                    "cpu_breakdown_ms_per_branch": {k: v / (runs * width) * 1000 for k, v in cpu.items()},
                    "cpu_ms_per_run": sum(cpu.values()) / runs * 1000,
                    "fanin_started_exactly_once": once,
                    "fanin_start_signals": starts,
                    "store_check": store,
                }
                f = ex["fan_out"][str(width)]
                self.say(f"  fan-out {width:5d}: emit->fan-in start p50 {f['emit_to_fanin_start_ms']['median']:.0f} ms, "
                         f"{f['cpu_ms_per_branch']:.2f} ms CPU/branch, fan-in started once: {once} "
                         f"({runs} runs in {elapsed:.1f}s)")

        # CPU per run with many runs already stored vs an empty store: worker sets of their own.
        stored = [by_key[k] for k in plan["stored"]]
        if stored:
            self.say(f"scaling: starting workers for {', '.join(s.key for s in stored)}")
            raw_stored: dict[str, list[dict]] = {}
            try:
                self.start_workers(stored, processes, threads)
                guess = base_rate.get("ours_sqlite", 50.0)
                est_s = {}
                for s in stored:
                    first = self.throughput(s, 0.5 if args.smoke else 1.5, guess, warmup=2 if args.smoke else 2 * concurrency,
                                            stall=60, concurrency=concurrency)
                    est_s[s.key] = first["runs_per_s"]
                for r in range(args.extra_rounds):
                    for s in stored:
                        m = self.throughput(s, args.extra_seconds, est_s[s.key], concurrency=concurrency, stall=60,
                                            warmup=2 if args.smoke else max(8, min(concurrency, int(est_s[s.key] * 0.3))))
                        raw_stored.setdefault(s.key, []).append(m)
                        est_s[s.key] = m["runs_per_s"]
                        self.say(f"  round {r + 1} {s.key:21s} {m['runs_per_s']:8.1f} runs/s "
                                 f"{m['cpu_ms_per_run']:7.2f} ms CPU/run {m['runs']:5d} runs in {m['seconds']:4.1f}s")
            except BenchError as exc:
                ex["errors"].append(f"stored runs: {exc}")
                self.say(f"  stored runs FAILED: {str(exc)[:300]}")
            finally:
                self.stop_workers([s.key for s in stored])
            empty, full = (_summary(raw_stored[k]) if raw_stored.get(k) else None
                           for k in ("ours_sqlite_empty", "ours_sqlite_1m"))
            ex["stored_runs"] = {"runs_stored": self.args.stored_runs, "store": self.stored_store,
                                 "empty": empty, "stored": full}

    def run_profile(self, shape: str, concurrency: int) -> None:
        from tests.bench import profile as profiling

        s = next((x for x in self.systems if x.key == self.args.profile_system), None)
        if s is None or not self.results[shape][s.key]["rounds"]:
            return
        rate = max(r["runs_per_s"] for r in self.results[shape][s.key]["rounds"])
        pids = [c for w in self.workers[s.key] for c in direct_children(w.pid)]
        self.say(f"profile: py-spy on {len(pids)} worker processes of {s.key} for {self.args.profile:.0f}s")
        self.profile = profiling.profile_under_load(
            pids, self.args.profile, self.work_dir / "profile",
            lambda: self.throughput(s, self.args.profile + 3, rate, stall=60, concurrency=concurrency),
            mode=os.environ.get("BENCH_PYSPY_MODE", "gil"))

    # --- whole run --------------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        self.prepare_dirs()
        load_before = os.getloadavg()
        self.ensure_broker()
        pg_url = self.ensure_postgres()
        sqlite_url = f"sqlite:///{self.work_dir / 'ours.sqlite3'}"
        celery = celery_available() and not args.skip_celery
        if not celery:
            self.skipped["celery_prefork"] = self.skipped["celery_threads"] = self.skipped["celery_results"] = (
                "--skip-celery" if args.skip_celery else "celery not installed (pip install -e '.[bench]')")
        celery_results = celery and celery_results_available()
        if celery and not celery_results:
            self.skipped["celery_results"] = "django-celery-results not installed (pip install -e '.[bench]')"
        extra_urls = {"ours_sqlite_noinline": f"sqlite:///{self.work_dir / 'ours-noinline.sqlite3'}",
                      "ours_sqlite_confirms": f"sqlite:///{self.work_dir / 'ours-confirms.sqlite3'}",
                      "ours_sqlite_quorum": f"sqlite:///{self.work_dir / 'ours-quorum.sqlite3'}",
                      "ours_sqlite_flow": f"sqlite:///{self.work_dir / 'ours-flow.sqlite3'}"}
        if args.skip_extras or args.stored_runs <= 0:
            self.skipped["ours_sqlite_1m"] = "--skip-extras" if args.skip_extras else "--stored-runs 0"
        else:
            extra_urls["ours_sqlite_empty"] = f"sqlite:///{self.work_dir / 'ours-empty.sqlite3'}"
            extra_urls["ours_sqlite_1m"] = f"sqlite:///{self.work_dir / 'ours-1m.sqlite3'}"
        self.systems = build_systems(prefix=args.queue_prefix, broker_url=self.broker_url, work_dir=self.work_dir,
                                     sqlite_url=sqlite_url, postgres_url=pg_url, celery=celery,
                                     celery_results=celery_results, extra_sqlite_urls=extra_urls)
        if args.only:
            keep = {k.strip() for k in args.only.split(",")}
            self.systems = [s for s in self.systems if s.key in keep]
        for s in self.systems:
            if s.db == "postgresql":
                s.db_root_pid = self.pg_pid
            if s.key == "ours_sqlite_1m":
                s.label = f"ours, SQLite, {args.stored_runs:,} runs stored"
        ours = [s for s in self.systems if s.kind == "ours"]
        databases = [(s.key, s.child_env(os.environ)) for s in self.systems if s.migrate]
        stored = [s for s in self.systems if s.key in ("ours_sqlite_empty", "ours_sqlite_1m")]
        template = self.work_dir / "ours-template.sqlite3"
        if stored:
            databases.append(("ours-template", {**stored[0].child_env(os.environ), "DATABASE_URL": f"sqlite:///{template}"}))
        self.extras_reserve = 0.0 if args.skip_extras else self.extras_estimate()
        self.say(f"setup: migrating {len(databases)} database(s), starting {len(self.systems)} producers"
                 + (f"; {self.extras_reserve:.0f}s kept for the scaling figures" if self.extras_reserve else ""))
        self.migrate(databases)
        if stored:
            self.prepare_stored(template)
        self.start_producers(self.systems)
        self.shapes_total = len(args.shape_list)
        for i, (processes, threads) in enumerate(args.shape_list):
            self.run_shape(i, processes, threads)
        store = {}
        for s in self.systems:
            if s.kind not in ("ours", "django_dramatiq") and s.producer_system != "celery_results":
                continue
            try:
                store[s.key] = {**self.producers[s.key].call({"cmd": "check"}, timeout=120), "runs_started": self.produced[s.key]}
            except BenchError as exc:
                store[s.key] = {"error": str(exc)}
        self.machine = self.machine_facts(load_before)
        result = reporting.build(self, store)
        result["wall_seconds"] = round(time.monotonic() - self.t0, 1)
        table = reporting.table(result)
        if self.profile:
            from tests.bench.profile import format_summary

            table += "\n\n" + format_summary(self.profile)
        print(table, flush=True)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        self.say(f"results written to {self.out_path}")
        return 0

    def machine_facts(self, load_before: tuple[float, float, float]) -> dict:
        versions = {}
        for name in PACKAGES:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
        try:
            model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
        except OSError:
            model = ""
        try:
            broker = broker_version(self.broker_url)
        except Exception as exc:  # noqa: BLE001
            broker = {"error": str(exc)}
        db_versions = {s.key: self.producers[s.key].info.get("db_version") for s in self.systems if s.kind == "ours"}
        return {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "cores": os.cpu_count(),
            "cpu_model": model,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "os": platform.platform(),
            "python": platform.python_version(),
            "rabbitmq": broker,
            "databases": db_versions,
            "packages": versions,
        }


def _summary(ms: list[dict]) -> dict:
    """Median [min-max] over rounds of the throughput measurements of one figure."""
    keys = sorted({k for m in ms for k in m["cpu_breakdown_ms_per_run"]})
    return {
        "rounds_measured": len(ms),
        "runs_per_round": [m["runs"] for m in ms],
        "runs_per_s": spread([m["runs_per_s"] for m in ms]),
        "stage_msgs_per_s": spread([m["stage_msgs_per_s"] for m in ms]),
        "cpu_ms_per_run": spread([m["cpu_ms_per_run"] for m in ms]),
        "cpu_ms_per_stage": spread([m.get("cpu_ms_per_stage") for m in ms]),
        "cpu_breakdown_ms_per_run": {k: statistics.median([m["cpu_breakdown_ms_per_run"].get(k, 0.0) for m in ms])
                                     for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    bench = Bench(args)
    try:
        return bench.run()
    except BenchError as exc:
        bench.say(f"FAILED: {exc}")
        return 1
    finally:
        bench.cleanup()
        bench.say(f"total wall time {time.monotonic() - bench.t0:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
