#!/usr/bin/env python3
"""The runs list's queries on a million runs, in SQLite and in PostgreSQL: p50/p95 per filter.

    .venv/bin/python infra/query_bench.py                      # SQLite, and PostgreSQL when its binaries are on PATH
    .venv/bin/python infra/query_bench.py --runs 100000 --backends sqlite
    .venv/bin/python infra/query_bench.py --postgres-url postgres://user:pw@host:5432/db   # an existing server

Each backend gets a scratch database under var/query-bench/ (SQLite file; PostgreSQL cluster on
127.0.0.1:5498 run as user `postgres`, started and stopped here through `infra/postgres.sh`, or
an existing server given by `--postgres-url`), migrated with the project's migrations, filled once with bulk
inserts (kept for the next run), then every filter combination of the runs page is timed: the
page query (50 rows, keyset pagination) plus the capped count the page shows, as the dashboard
runs them (web/run_queries.py). Results go to var/query-bench/latest.json and stdout.
Not part of `make test`: filling a million runs takes minutes."""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("QUERY_BENCH_DIR", ROOT / "var" / "query-bench"))
PG_PORT = 5498

# name: share of runs; the event type each pipeline listens to (two share one: a fan-out).
PIPELINES = {
    "fulfil_order": (0.30, "order.placed"),
    "notify_customer": (0.30, "order.placed"),
    "sync_inventory": (0.15, "stock.changed"),
    "invoice": (0.10, "invoice.due"),
    "refund": (0.05, "refund.requested"),
    "report": (0.05, "report.requested"),
    "cleanup": (0.04, "cleanup.requested"),
    "audit_rare": (0.01, "audit.requested"),
}
STATUSES = [("succeeded", 0.94), ("failed", 0.045), ("cancelled", 0.01), ("running", 0.003), ("pending", 0.002)]


# --- the child: one backend, Django configured for it ---------------------------------------------

def child(database_url: str, runs: int, repeat: int, label: str) -> dict:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    os.environ.setdefault("PIPELINE_LOG_DIR", str(OUT / "log"))
    os.environ["PIPELINE_PROCESS"] = "querybench"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    from pipeline.models import Run

    existing = Run.objects.count()
    if existing < runs:
        fill(runs - existing, label)
    with connection.cursor() as cursor:
        # What autovacuum does on its own in a running database: visibility map and planner
        # statistics (PostgreSQL counts read the index alone only once the table is vacuumed).
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    return measure(repeat, label)


def fill(count: int, label: str) -> None:
    from django.db import transaction

    from pipeline.models import Event, Run

    rng = random.Random(42 + count)
    names = list(PIPELINES)
    weights = [PIPELINES[n][0] for n in names]
    statuses = [s for s, _ in STATUSES]
    status_weights = [w for _, w in STATUSES]
    now = datetime.now(timezone.utc)
    span = timedelta(days=30).total_seconds()
    batch = 20_000
    started = time.perf_counter()
    made = 0
    while made < count:
        events, run_rows = [], []
        size = min(batch, count - made)
        while len(run_rows) < size:
            pipeline = rng.choices(names, weights)[0]
            event_type = PIPELINES[pipeline][1]
            # Most runs are a bit in the past; 1/30 of them in the last day, like a steady stream.
            at = now - timedelta(seconds=rng.random() * span)
            event = Event(id=uuid.UUID(int=rng.getrandbits(128), version=4), type=event_type,
                          payload={"n": made + len(run_rows), "customer_email": "a@b.c", "total_cents": 4200},
                          occurred_at=at, trace_id=f"{rng.getrandbits(128):032x}", published_at=at)
            events.append(event)
            # An order.placed event starts both of its pipelines, like the real fan-out.
            subscribers = [p for p in names if PIPELINES[p][1] == event_type] if event_type == "order.placed" else [pipeline]
            for name in subscribers:
                status = rng.choices(statuses, status_weights)[0]
                duration = rng.lognormvariate(5, 1)
                run_rows.append(Run(id=uuid.UUID(int=rng.getrandbits(128), version=4), event=event, pipeline=name,
                                    status=status, trigger="event", created_at=at, started_at=at,
                                    finished_at=at + timedelta(milliseconds=duration) if status in ("succeeded", "failed", "cancelled") else None,
                                    duration_ms=duration if status != "pending" else None,
                                    error="stage charge: RuntimeError: card declined" if status == "failed" else ""))
        run_rows = run_rows[:size]
        with transaction.atomic():
            Event.objects.bulk_create(events, batch_size=2000)
            Run.objects.bulk_create(run_rows, batch_size=2000)
        made += len(run_rows)
        rate = made / (time.perf_counter() - started)
        print(f"[{label}] {made:,}/{count:,} runs inserted ({rate:,.0f}/s)", file=sys.stderr, flush=True)


def measure(repeat: int, label: str) -> dict:
    from django.db import connection, reset_queries
    from django.utils import timezone as dj_timezone

    from pipeline.models import Event, Run
    from web import run_queries as queries

    now = dj_timezone.now()
    sample = Run.objects.order_by("-created_at").values("id", "event_id", "created_at")[5000]
    trace = Event.objects.filter(id=sample["event_id"]).values_list("trace_id", flat=True).first()
    depth = min(200_000, Run.objects.count() // 5)
    deep = queries.encode_cursor(Run.objects.order_by("-created_at", "-id").values("id", "created_at")[depth])
    cases = {
        "no filter": {},
        "pipeline": {"pipeline": "fulfil_order"},
        "pipeline (1% of runs)": {"pipeline": "audit_rare"},
        "status=failed": {"status": "failed"},
        "pipeline + status=failed": {"pipeline": "invoice", "status": "failed"},
        "pipeline (1%) + status=cancelled": {"pipeline": "audit_rare", "status": "cancelled"},
        "event type": {"event_type": "stock.changed"},
        "event type (1%)": {"event_type": "audit.requested"},
        "event type + status=failed": {"event_type": "order.placed", "status": "failed"},
        # Runs under way and succeeded runs are not in the unsuccessful-runs indexes (pipeline/_status_index.py).
        "status=running": {"status": "running"},
        "pipeline + status=running": {"pipeline": "invoice", "status": "running"},
        "event type + status=running": {"event_type": "order.placed", "status": "running"},
        "status=succeeded": {"status": "succeeded"},
        "pipeline (1%) + status=succeeded": {"pipeline": "audit_rare", "status": "succeeded"},
        "last hour": {"range": "1h"},
        "last 24 h": {"range": "24h"},
        "pipeline + last 24 h": {"pipeline": "refund", "range": "24h"},
        "status=failed + last 7 d": {"status": "failed", "range": "7d"},
        "since/until (a day, 10 days ago)": {"since": (now - timedelta(days=11)).isoformat(),
                                              "until": (now - timedelta(days=10)).isoformat()},
        "all filters": {"pipeline": "fulfil_order", "status": "failed", "event_type": "order.placed", "range": "7d"},
        "search run id": {"q": str(sample["id"])},
        "search event id": {"q": str(sample["event_id"])},
        "search trace id": {"q": trace},
        f"page {depth // 50 + 1:,} (cursor)": {"before": deep},
        "status=failed, page 2 (cursor)": {"status": "failed", "_second_page": "1"},
    }
    results = {}
    for name, params in cases.items():
        timings = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            filters = queries.RunFilters.from_params(params)
            query = queries.runs_queryset(filters)
            before = params.get("before", "")
            if params.get("_second_page"):
                before = queries.page_of(query).older or ""
                t0 = time.perf_counter()
            page = queries.page_of(query, before=before)
            queries.count_capped(query)
            timings.append((time.perf_counter() - t0) * 1000)
        timings.sort()
        results[name] = {
            "p50_ms": round(statistics.median(timings), 2),
            "p95_ms": round(timings[min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))], 2),
            "rows": len(page.rows),
        }
        print(f"[{label}] {name:38s} p50 {results[name]['p50_ms']:8.2f} ms  p95 {results[name]['p95_ms']:8.2f} ms"
              f"  ({results[name]['rows']} rows)", file=sys.stderr, flush=True)
    for window in ("hour", "day"):
        timings = []
        for _ in range(max(3, repeat // 4)):
            t0 = time.perf_counter()
            queries.overview(window)
            timings.append((time.perf_counter() - t0) * 1000)
        timings.sort()
        results[f"overview ({window})"] = {"p50_ms": round(statistics.median(timings), 2),
                                           "p95_ms": round(timings[-1], 2), "rows": None}
        print(f"[{label}] {'overview (' + window + ')':38s} p50 {results[f'overview ({window})']['p50_ms']:8.2f} ms",
              file=sys.stderr, flush=True)
    del connection, reset_queries
    return {"runs": Run.objects.count(), "events": Event.objects.count(), "cases": results}


# --- the parent: databases, one child per backend ---------------------------------------------------

def run_child(label: str, url: str, args: argparse.Namespace) -> dict:
    # Timings on a shared machine mean little without its load: recorded with each backend.
    load_before = os.getloadavg()[0]
    env = dict(os.environ, PIPELINE_VAR_DIR=str(OUT / "var"))
    command = [sys.executable, __file__, "--child", url, "--label", label, "--runs", str(args.runs),
               "--repeat", str(args.repeat)]
    output = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
    return {**json.loads(output), "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cpus": os.cpu_count()}


def _pg_ready(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class LocalPostgres:
    """A throw-away cluster under var/query-bench/, run as `postgres`; stopped again whatever happens.
    Uses infra/postgres.sh when the repo has it, else initdb/pg_ctl directly."""

    SCRIPT = ROOT / "infra" / "postgres.sh"

    def __init__(self, port: int) -> None:
        self.port = port
        self.var = OUT / "postgres"
        self.data = self.var / "data"
        self.started = False

    def as_postgres(self, *command: str, capture: bool = False) -> str:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, cwd="/tmp",
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL, text=True)
        return result.stdout or ""

    def _script(self, action: str) -> None:
        env = dict(os.environ, PGPORT=str(self.port), PG_VAR=str(self.var))
        subprocess.run(["bash", str(self.SCRIPT), action], check=True, env=env, cwd=ROOT)

    def start(self) -> str:
        if _pg_ready(self.port):
            raise SystemExit(f"port {self.port} is in use; pass --pg-port")
        self.started = True
        if self.SCRIPT.exists():
            self._script("start")
        else:
            if not (self.data / "PG_VERSION").exists():
                self.data.mkdir(parents=True, exist_ok=True)
                shutil.chown(self.var, "postgres", "postgres")
                shutil.chown(self.data, "postgres", "postgres")
                self.as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
            self.as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.var / "server.log"), "-w", "-o",
                             f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp", "start")
        psql = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-tAc"]
        if not self.as_postgres(*psql, "SELECT 1 FROM pg_database WHERE datname = 'querybench'", capture=True).strip():
            self.as_postgres(*psql, "CREATE DATABASE querybench")
        return f"postgres://postgres@127.0.0.1:{self.port}/querybench"

    def stop(self) -> None:
        if not self.started:
            return
        if self.SCRIPT.exists():
            self._script("stop")
        else:
            self.as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.started = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40, help="timings per case")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=os.environ.get("QUERY_BENCH_POSTGRES_URL", ""))
    parser.add_argument("--pg-port", type=int, default=PG_PORT)
    parser.add_argument("--child", default="")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.runs, args.repeat, args.label)))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    report: dict = {"runs": args.runs, "repeat": args.repeat, "backends": {}}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "sqlite" in backends:
        report["backends"]["sqlite"] = run_child("sqlite", f"sqlite:///{OUT / 'runs.sqlite3'}", args)
    if "postgres" in backends:
        if args.postgres_url:
            report["backends"]["postgres"] = run_child("postgres", args.postgres_url, args)
        elif shutil.which("initdb") and shutil.which("pg_ctl"):
            server = LocalPostgres(args.pg_port)
            try:
                report["backends"]["postgres"] = run_child("postgres", server.start(), args)
            finally:
                server.stop()
        else:
            print("postgres: no --postgres-url and no initdb/pg_ctl on PATH; skipped", file=sys.stderr)
    (OUT / "latest.json").write_text(json.dumps(report, indent=2))
    names = list(next(iter(report["backends"].values()))["cases"]) if report["backends"] else []
    header = f"{'case':40s}" + "".join(f"{b + ' p50':>14s}{b + ' p95':>14s}" for b in report["backends"])
    print(header)
    for name in names:
        print(f"{name:40s}" + "".join(
            f"{report['backends'][b]['cases'][name]['p50_ms']:>11.2f} ms{report['backends'][b]['cases'][name]['p95_ms']:>11.2f} ms"
            for b in report["backends"]))
    for backend, result in report["backends"].items():
        print(f"{backend}: {result['runs']:,} runs, {result['events']:,} events; 1-minute load average "
              f"{result['load_average'][0]} before, {result['load_average'][1]} after, on {result['cpus']} CPUs")
    print(f"written to {OUT / 'latest.json'}")


if __name__ == "__main__":
    main()
