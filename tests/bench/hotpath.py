"""What one run of our pipeline costs, counted in-process on one thread, without contention:

    .venv/bin/python -m tests.bench.hotpath [--runs 300] [--database-url URL] [--broker-url URL]
                                            [--conn-max-age S] [--no-console-log] [--cprofile]

emits the bench event and executes its three stages the way a worker does (django-dramatiq's
DbConnectionsMiddleware closes old connections before and after each message), publishing the
stage messages to a scratch queue on the real broker. Prints per run: SQL statements by kind,
commits, connections opened, log lines, publishes, and the wall time of emit and of each stage;
with --cprofile, where the time goes (inclusive time of the engine's costly calls, ms per run).
--conn-max-age and --no-console-log measure what those settings would save (nothing else changes).
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import json
import logging
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--database-url", default=None, help="default: a fresh SQLite file under var/bench/")
    p.add_argument("--broker-url", default=os.environ.get("PIPELINE_BROKER_URL"))
    p.add_argument("--conn-max-age", type=float, default=None, help="override CONN_MAX_AGE (what-if)")
    p.add_argument("--no-console-log", action="store_true", help="drop the console log handler (what-if)")
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="runs emitted and handled by this many threads at once (commits per run then show the group commit)")
    p.add_argument("--no-group-commit", action="store_true",
                   help="run the store's operations on this thread (what the profile then sees) instead of the writer thread")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--show-sql", action="store_true", help="print every SQL statement of one run, by step")
    args = p.parse_args(argv)
    if not args.broker_url:
        p.error("--broker-url (or PIPELINE_BROKER_URL) is needed: stage messages are really published")

    work = ROOT / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    if args.database_url is None:
        for f in work.glob("hotpath.sqlite3*"):
            f.unlink()
        args.database_url = f"sqlite:///{work / 'hotpath.sqlite3'}"
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.bench.settings", DATABASE_URL=args.database_url,
        PIPELINE_BROKER_URL=args.broker_url, PIPELINE_LOG_DIR=str(work / "log-hotpath"),
        BENCH_OURS_QUEUE="bench_hotpath", PIPELINE_PROCESS="hotpath", DJANGO_DEBUG="0",
        BENCH_BROKER_URL=args.broker_url, BENCH_DONE_QUEUE="bench_hotpath.done",
    )
    if args.no_console_log:
        os.environ["PIPELINE_LOG_FORMAT"] = "none"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import close_old_connections, connection
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.signals import connection_created

    from pipeline import emit
    from pipeline.models import Run
    from pipeline._runtime import execute_stage
    from tests.bench.benchapp.pipelines import noop
    from tests.bench.payload import make_payload

    call_command("migrate", verbosity=0, interactive=False)
    if args.no_group_commit:
        settings.PIPELINE_GROUP_COMMIT = False
    if args.conn_max_age is not None:
        settings.DATABASES["default"]["CONN_MAX_AGE"] = args.conn_max_age
        connection.settings_dict["CONN_MAX_AGE"] = args.conn_max_age

    counts: collections.Counter = collections.Counter()
    log_events: collections.Counter = collections.Counter()

    def count_sql(execute, sql, params, many, context):
        counts["sql"] += 1
        counts["sql:" + sql.lstrip().split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)

    from pipeline import logging as pipeline_logging

    def count_line(event_dict: dict) -> None:
        counts["log_lines"] += 1
        log_events[str(event_dict.get("event"))[:40]] += 1

    pipeline_logging.line_observers.append(count_line)
    connection.execute_wrappers.append(count_sql)
    holder = None
    if connection.vendor == "sqlite":
        # Worker processes never hold the only connection to the file (the producer, the other
        # workers keep theirs): hold one open, or every close would checkpoint the WAL.
        import sqlite3

        holder = sqlite3.connect(connection.settings_dict["NAME"])
        holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    connection_created.connect(lambda **kw: counts.update(["connections_opened"]), weak=False)
    original_commit = BaseDatabaseWrapper._commit

    def counting_commit(self):
        counts["commits"] += 1
        return original_commit(self)

    BaseDatabaseWrapper._commit = counting_commit
    broker = noop.stages["first"].actor.broker
    original_enqueue = broker.enqueue
    import threading

    local = threading.local()  # each thread handles the messages its own runs publish

    def counting_enqueue(message, *, delay=None):
        counts["publishes"] += 1
        local.published.append(message)
        return original_enqueue(message, delay=delay)

    broker.enqueue = counting_enqueue
    timings: dict[str, list[float]] = collections.defaultdict(list)
    from dramatiq.middleware import CurrentMessage

    from pipeline.middleware import LoggingContext

    logging_context = LoggingContext()

    def one_run(seq: int) -> None:
        """Emits, then handles each message the run publishes the way a worker does (the real
        message, with what it carries), until the run publishes no more."""
        published = local.__dict__.setdefault("published", [])
        t = time.perf_counter()
        emit("bench.started", make_payload(seq), source="bench")
        timings["emit"].append(time.perf_counter() - t)
        while published:
            message = published.pop(0)
            stage = noop.stages[message.actor_name.split(".", 1)[1]]
            t = time.perf_counter()
            close_old_connections()  # django_dramatiq's DbConnectionsMiddleware, before the message
            token = CurrentMessage._MESSAGE.set(message)
            logging_context.before_process_message(broker, message)
            try:
                execute_stage(stage, message.args[0])
            finally:
                logging_context.after_process_message(broker, message)
                CurrentMessage._MESSAGE.reset(token)
            close_old_connections()  # ... and after it
            timings[f"message {stage.name}"].append(time.perf_counter() - t)

    for i in range(20):  # warm up
        one_run(i)
    if args.show_sql:
        def show(execute, sql, params, many, context):
            print(f"  [django] {sql[:160]}")
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(show)
        one_run(999_999)
        connection.execute_wrappers.remove(show)
    from pipeline import _writer as store_writer

    counts.clear()
    log_events.clear()
    timings.clear()
    for key in store_writer.counters:
        store_writer.counters[key] = 0
    profiler = cProfile.Profile() if args.cprofile else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    if args.threads == 1:
        for i in range(args.runs):
            one_run(1000 + i)
    else:
        # Several threads at once, as a worker's threads: what the group commit amortises.
        def part(k: int) -> None:
            for i in range(k, args.runs, args.threads):
                one_run(1000 + i)

        workers = [threading.Thread(target=part, args=(k,)) for k in range(args.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = args.runs
    # Statements run on the raw connection (precompiled, batched by the group-commit writer) are
    # counted by the writer itself; commits of the writer's own connection too.
    counts["sql"] += store_writer.counters["statements"]
    counts["sql:raw (precompiled)"] += store_writer.counters["statements"]
    counts["commits"] += store_writer.counters["commits"]
    result = {
        "database": connection.vendor,
        "runs": n,
        "threads": args.threads,
        "conn_max_age": connection.settings_dict.get("CONN_MAX_AGE"),
        "console_log": not args.no_console_log,
        "ms_per_run_wall": round(elapsed / n * 1000, 3),
        "cpu_ms_per_run": round(cpu / n * 1000, 3),
        "per_run": {k: round(v / n, 2) for k, v in sorted(counts.items())},
        "log_events_per_run": {k: round(v / n, 2) for k, v in log_events.most_common()},
        "ms_per_step": {k: round(sum(v) / len(v) * 1000, 3) for k, v in timings.items()},
    }
    if profiler:
        result["cprofile_ms_per_run"] = _profile_costs(profiler, n)
        if os.environ.get("BENCH_HOTPATH_DUMP"):
            profiler.dump_stats(os.environ["BENCH_HOTPATH_DUMP"])
    if holder is not None:
        holder.close()
    _cleanup_queue(args.broker_url)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_format(result))
    return 0


# Inclusive time of the calls that make up a run, matched on (file suffix, function name).
COSTS = [
    ("connection open (connect + init_command PRAGMAs)", "django/db/backends/base/base.py", "connect"),
    ("connection close", "django/db/backends/base/base.py", "close"),
    ("close_old_connections (middleware)", "django/db/__init__.py", "close_old_connections"),
    ("SQL execute (driver, incl. waiting)", "django/db/backends/utils.py", "_execute"),
    ("commit", "django/db/backends/base/base.py", "_commit"),
    ("ORM: QuerySet.update", "django/db/models/query.py", "update"),
    ("ORM: QuerySet.get/first (model rows)", "django/db/models/query.py", "get"),
    ("ORM: bulk_create", "django/db/models/query.py", "bulk_create"),
    ("ORM: SQL compile", "django/db/models/sql/compiler.py", "as_sql"),
    ("logging: structlog native (processors, render, write)", "structlog/_base.py", "_process_event"),
    ("logging: stdlib Logger.handle (third-party lines)", "logging/__init__.py", "handle"),
    ("logging: console render", "structlog/dev.py", "__call__"),
    ("logging: file write", "pipeline/logging.py", "write"),
    ("broker publish (dramatiq enqueue)", "dramatiq/brokers/rabbitmq.py", "enqueue"),
    ("pydantic validate (emit)", "pipeline/_events.py", "validate"),
    ("emit", "pipeline/_events.py", "emit"),
    ("publish_first_stages (after commit)", "pipeline/_publisher.py", "publish_first_stages"),
    ("execute_stage (whole message: claim, 3 stages inline)", "pipeline/_runtime.py", "execute_stage"),
    ("claim (hand-over + wait for the group commit)", "pipeline/_stage_store.py", "claim"),
    ("_succeeded (hand-over + wait for the group commit)", "pipeline/_runtime.py", "_succeeded"),
    ("writer: one batch transaction (writer thread)", "pipeline/_writer.py", "_transaction"),
    ("publish_ready", "pipeline/_publisher.py", "publish_ready"),
]


def _profile_costs(profiler: cProfile.Profile, runs: int) -> dict[str, float]:
    stats = pstats.Stats(profiler)
    out = {}
    for label, suffix, func in COSTS:
        total = 0.0
        for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
            if name == func and file.replace("\\", "/").endswith(suffix):
                total += ct
        out[label] = round(total / runs * 1000, 3)
    return out


def _cleanup_queue(url: str) -> None:
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        for q in ("bench_hotpath", "bench_hotpath.DQ", "bench_hotpath.XQ"):
            try:
                channel.queue_delete(q)
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()
        connection.close()
    except Exception:  # noqa: BLE001 - a scratch queue left behind is harmless
        pass


def _format(r: dict) -> str:
    lines = [f"{r['database']}: {r['runs']} runs in-process, {r['threads']} thread(s): {r['ms_per_run_wall']} ms per run, "
             f"{r['cpu_ms_per_run']} ms CPU (all threads) (CONN_MAX_AGE={r['conn_max_age']}, console log {'on' if r['console_log'] else 'off'})",
             "per run: " + ", ".join(f"{k}={v}" for k, v in r["per_run"].items()),
             "log lines per run: " + ", ".join(f"{k}={v}" for k, v in r["log_events_per_run"].items()),
             "ms per step: " + ", ".join(f"{k}={v}" for k, v in r["ms_per_step"].items())]
    if "cprofile_ms_per_run" in r:
        lines.append("cProfile, inclusive ms per run (profiler overhead inflates all of them alike):")
        for k, v in r["cprofile_ms_per_run"].items():
            lines.append(f"  {v:8.3f}  {k}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
