"""The systems the benchmark compares: how to start each one's workers and producer."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from tests.bench.common import ROOT, direct_children, rss_mb

PY = sys.executable


@dataclass
class System:
    key: str
    label: str
    kind: str  # floor | dramatiq | ours | celery | django_dramatiq
    queue: str
    done_queue: str
    env: dict[str, str] = field(default_factory=dict)
    pool: str | None = None  # celery: prefork | threads
    db: str | None = None  # ours: sqlite | postgresql
    db_root_pid: int | None = None  # a database server whose CPU counts for this system
    celery_app: str = "tests.bench.celery_app"
    producer_system: str | None = None  # the producer's SYSTEM argument (default: kind)
    migrate: bool = False  # `manage.py migrate` its database before the run
    # "main": measured in the interleaved rounds of every shape; "first": of the first shape
    # only; "extra": only by the scaling figures (stored runs), with the first shape.
    phase: str = "main"

    @property
    def has_workers(self) -> bool:
        return self.kind != "floor"

    def child_env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        # PIPELINE_INLINE_CHAINS too: "ours" is the engine's default, "no inline chains" sets it.
        for key in ("PIPELINE_PROCESS", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "BENCH_CONFIRM", "BENCH_SEEDED",
                    "PIPELINE_INLINE_CHAINS"):
            env.pop(key, None)
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", BENCH_QUEUE=self.queue, BENCH_DONE_QUEUE=self.done_queue)
        env.update(self.env)
        return env

    def producer_args(self) -> list[str]:
        return [PY, "-m", "tests.bench.producer", self.producer_system or self.kind]

    def worker_commands(self, processes: int, threads: int) -> list[tuple[str, list[str]]]:
        """(name, argv) of each worker process to start for this shape."""
        shutdown = ["--worker-shutdown-timeout", "5000"]
        if self.kind == "dramatiq":
            return [(f"{self.key}-worker", [PY, "-m", "dramatiq", "tests.bench.raw_dramatiq", "--processes",
                                             str(processes), "--threads", str(threads), "--queues", self.queue,
                                             *shutdown])]
        if self.kind in ("ours", "django_dramatiq"):
            return [(f"{self.key}-worker", [PY, "manage.py", "rundramatiq", "--processes", str(processes),
                                             "--threads", str(threads), "--queues", self.queue, *shutdown])]
        if self.kind == "celery":
            # Celery has no "processes x threads": the threads pool is 2 workers x `threads` threads;
            # prefork is 2 workers x `threads` child processes (the same number of concurrent slots).
            return [
                (f"{self.key}-worker{i}", [PY, "-m", "celery", "-A", self.celery_app, "worker",
                                           "--pool", self.pool, "--concurrency", str(threads), "-Q", self.queue,
                                           "-n", f"{self.key}{i}@%h", "--without-gossip", "--without-mingle",
                                           "--without-heartbeat", "--loglevel", "WARNING"])
                for i in range(1, processes + 1)
            ]
        return []

    def consumers_expected(self, processes: int) -> int:
        """Consumers on the queue once every worker process listens (one per process / instance)."""
        return processes

    def shape_note(self, processes: int, threads: int) -> str:
        if self.kind == "celery" and self.pool == "prefork":
            return f"{processes} workers x {threads} child processes"
        if self.kind == "celery":
            return f"{processes} workers x {threads} threads"
        if self.kind == "floor":
            return "1 publisher, then 1 consumer"
        return f"{processes} processes x {threads} threads"

    def worker_rss(self, roots: list[int]) -> dict:
        """Resident memory per worker process. Dramatiq (raw and ours): each forked worker process
        (the master that only supervises is left out). Celery threads: each worker. Celery prefork:
        each worker with its pool children summed (what one such worker costs)."""
        if self.kind in ("dramatiq", "ours", "django_dramatiq"):
            pids = [c for r in roots for c in direct_children(r)]
            values = [rss_mb(p) for p in pids]
            what = "per forked worker process"
        elif self.pool == "prefork":
            values = [rss_mb(r, with_children=True) for r in roots]
            what = "per worker (master + pool children)"
        else:
            values = [rss_mb(r) for r in roots]
            what = "per worker process"
        values = [v for v in values if v == v]
        return {"per_process_mb": (sum(values) / len(values)) if values else None,
                "total_mb": sum(values) if values else None, "processes": len(values), "what": what}


def build_systems(*, prefix: str, broker_url: str, work_dir, sqlite_url: str | None, postgres_url: str | None,
                  celery: bool, celery_results: bool = False, django_dramatiq: bool = True,
                  extra_sqlite_urls: dict[str, str] | None = None) -> list[System]:
    """The systems of one run. `extra_sqlite_urls`: {"ours_sqlite_noinline" | "ours_sqlite_confirms" |
    "ours_sqlite_quorum" | "ours_sqlite_flow" | "ours_sqlite_empty" | "ours_sqlite_1m": a SQLite URL} for our SQLite variants, each with a store of its own."""
    def done(key: str) -> str:
        return f"{prefix}.done.{key}"

    def ours(key: str, label: str, url: str, db: str, **extra) -> System:
        queue = f"{prefix}_{key}"
        env = {**base, "DJANGO_SETTINGS_MODULE": "tests.bench.settings", "DATABASE_URL": url,
               "PIPELINE_BROKER_URL": broker_url, "PIPELINE_LOG_DIR": str(work_dir / f"log-{key}"),
               "BENCH_OURS_QUEUE": queue, "DJANGO_DEBUG": "0",
               "BENCH_WRITER_STATS_DIR": str(work_dir / f"writer-stats-{key}"), **extra.pop("env", {})}
        return System(key, label, "ours", queue, done(key), env, db=db, **extra)

    base = {"BENCH_BROKER_URL": broker_url}
    extra_urls = extra_sqlite_urls or {}
    systems = [
        System("floor", "floor: pika, persistent, confirmed", "floor", f"{prefix}.floor", done("floor"), dict(base)),
        System("dramatiq", "raw Dramatiq (defaults)", "dramatiq", f"{prefix}_dramatiq", done("dramatiq"), dict(base)),
        System("dramatiq_confirm", "raw Dramatiq, confirm_delivery", "dramatiq", f"{prefix}_dramatiq_confirm",
               done("dramatiq_confirm"), {**base, "BENCH_CONFIRM": "1"}),
    ]
    if sqlite_url:
        systems.append(ours("ours_sqlite", "ours, SQLite run store", sqlite_url, "sqlite", migrate=True))
    if "ours_sqlite_noinline" in extra_urls:
        # The engine reads PIPELINE_INLINE_CHAINS from the environment ("1", the default: on).
        systems.append(ours("ours_sqlite_noinline", "ours, SQLite, no inline chains", extra_urls["ours_sqlite_noinline"],
                            "sqlite", migrate=True, env={"PIPELINE_INLINE_CHAINS": "0"}))
    # The broker's durability settings beside the classic, unconfirmed default (issue 17): publisher
    # confirms on classic queues, and quorum queues (with confirms: their default).
    # Flow control (issue 14): bench_noop with Concurrency(limit=8, key="customer_email"), the producer
    # spreading the runs over 64 customers (BENCH_FLOW_CONCURRENCY = "<limit>x<keys>").
    if "ours_sqlite_flow" in extra_urls:
        systems.append(ours("ours_sqlite_flow", "ours, SQLite, concurrency 8 per key, 64 keys",
                            extra_urls["ours_sqlite_flow"], "sqlite", migrate=True, phase="first",
                            env={"BENCH_FLOW_CONCURRENCY": "8x64"}))
    if "ours_sqlite_confirms" in extra_urls:
        systems.append(ours("ours_sqlite_confirms", "ours, SQLite, publisher confirms", extra_urls["ours_sqlite_confirms"],
                            "sqlite", migrate=True, env={"PIPELINE_PUBLISH_CONFIRMS": "1"}))
    if "ours_sqlite_quorum" in extra_urls:
        systems.append(ours("ours_sqlite_quorum", "ours, SQLite, quorum queues + confirms",
                            extra_urls["ours_sqlite_quorum"], "sqlite", migrate=True,
                            env={"PIPELINE_QUEUE_TYPE": "quorum", "PIPELINE_PUBLISH_CONFIRMS": "1"}))
    if postgres_url:
        systems.append(ours("ours_pg", "ours, PostgreSQL run store", postgres_url, "postgresql", migrate=True))
    if celery:
        for pool in ("prefork", "threads"):
            key = f"celery_{pool}"
            systems.append(System(key, f"Celery chain, {pool} pool", "celery", f"{prefix}_{key}", done(key),
                                  dict(base), pool=pool))
    # Like-for-like peers: a durable record per task in the same kind of store (SQLite, WAL).
    if celery and celery_results:
        key = "celery_results"
        systems.append(System(
            key, "Celery chain + django-celery-results", "celery", f"{prefix}_{key}", done(key),
            {**base, "DJANGO_SETTINGS_MODULE": "tests.bench.settings_celery_results",
             "DATABASE_URL": f"sqlite:///{work_dir / 'celery_results.sqlite3'}"},
            pool="threads", celery_app="tests.bench.celery_results_app", producer_system="celery_results",
            migrate=True, phase="first"))
    if django_dramatiq:
        key = "dj_dramatiq_admin"
        queue = f"{prefix}_{key}"
        systems.append(System(
            key, "django_dramatiq + AdminMiddleware", "django_dramatiq", queue, done(key),
            {**base, "DJANGO_SETTINGS_MODULE": "tests.bench.settings_django_dramatiq",
             "DATABASE_URL": f"sqlite:///{work_dir / 'dj_dramatiq.sqlite3'}", "PIPELINE_BROKER_URL": broker_url,
             "PIPELINE_LOG_DIR": str(work_dir / f"log-{key}"), "BENCH_OURS_QUEUE": queue, "DJANGO_DEBUG": "0"},
            migrate=True, phase="first"))
    for key, label, seeded in (("ours_sqlite_empty", "ours, SQLite, empty store", False),
                               ("ours_sqlite_1m", "ours, SQLite, 1M runs stored", True)):
        if key in extra_urls:
            systems.append(ours(key, label, extra_urls[key], "sqlite", phase="extra",
                                env={"BENCH_SEEDED": "1"} if seeded else {}))
    return systems


def celery_available() -> bool:
    try:
        import celery  # noqa: F401
    except ImportError:
        return False
    return True


def celery_results_available() -> bool:
    try:
        import django_celery_results  # noqa: F401
    except ImportError:
        return False
    return True


def env_without_bench(environ: dict[str, str] | None = None) -> dict[str, str]:
    return {k: v for k, v in (environ or os.environ).items() if not k.startswith("BENCH_")}
