"""A SQLite run store with a million runs already in it, for `make bench`'s "cost per run at 1M
stored runs" figure, made once and cached under the bench work dir.

    .venv/bin/python -m tests.bench.seed TEMPLATE.sqlite3 WORK_DIR [--runs 1000000]

The template is a freshly migrated, empty run store. Its schema (tables, indexes, applied
migrations) names the cached file, `store-<runs>-<schema hash>.sqlite3`: a schema change (a new
migration) makes a new one, and the stale ones are deleted. Filling is raw SQL in one
connection: the secondary indexes of the three tables are dropped, the rows are made by
`INSERT ... SELECT` over a counter (events, runs, three stage runs per run, all succeeded, spread
over the last 30 days, the bench's ~200-byte payload), then the indexes are built again from
their own `CREATE INDEX` statements. Columns are read from the table, so a column the engine
adds later gets a neutral value (its default, or 0 / '' / now) instead of breaking the seeding.
A million runs take about 1-2 minutes and ~1.5 GB; the bench then works on a copy."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

TABLES = ("pipeline_event", "pipeline_run", "pipeline_stagerun")
STAGES = ("first", "second", "third")
PAYLOAD = ('{"seq": %d, "customer_email": "ada.lovelace@example.com", "items": [{"sku": "BOOK-1", "quantity": 2}, '
           '{"sku": "PEN-7", "quantity": 1}], "total_cents": 4200, '
           '"note": "benchmark payload, three no-op stages pass it along unchanged"}')
SPAN_DAYS = 30.0


def schema_hash(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name").fetchall()
        try:
            rows += con.execute("SELECT app, name, '', '' FROM django_migrations ORDER BY app, name").fetchall()
        except sqlite3.OperationalError:
            pass
    finally:
        con.close()
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:12]


def _ts(expr: str) -> str:
    """SQL for Django's SQLite datetime text ('YYYY-MM-DD HH:MM:SS.ffffff') of a julian day expression."""
    return (f"(strftime('%Y-%m-%d %H:%M:%S', {expr}) || '.' || "
            f"printf('%06d', CAST(((({expr}) * 86400.0) - CAST((({expr}) * 86400.0) AS INTEGER)) * 1000000 AS INTEGER)))")


def _uuid(prefix: str, n: str) -> str:
    """32 hex digits: a fixed 8-digit prefix per table, then the counter (ascending: appended to the
    primary key's index, not scattered through it)."""
    return f"printf('{prefix}%024x', {n})"


def _fallback(col: tuple) -> str:
    _cid, name, decl, notnull, default, _pk = col
    if default is not None:
        return default
    if not notnull:
        return "NULL"
    decl = (decl or "").lower()
    if any(t in decl for t in ("int", "bool")):
        return "0"
    if any(t in decl for t in ("real", "float", "double", "decimal", "numeric")):
        return "0.0"
    if "datetime" in decl or decl == "date":
        return _ts("julianday('now')")
    if name.endswith(("_log", "_list", "queues", "current")):
        return "'[]'"
    return "''"


def _select(con: sqlite3.Connection, table: str, known: dict[str, str]) -> tuple[list[str], list[str]]:
    columns, exprs = [], []
    for col in con.execute(f'PRAGMA table_info("{table}")'):
        name, pk = col[1], col[5]
        if table == "pipeline_stagerun" and name == "id" and pk:
            continue  # INTEGER PRIMARY KEY: SQLite numbers the rows
        columns.append(f'"{name}"')
        exprs.append(known.get(name, _fallback(col)))
    return columns, exprs


def fill(db: Path, runs: int, say=lambda s: None) -> dict:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("PRAGMA cache_size=-400000")  # 400 MB while building the indexes
        con.execute("PRAGMA temp_store=MEMORY")
        indexes = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN (%s)"
            % ",".join("?" * len(TABLES)), TABLES).fetchall()
        con.execute("BEGIN")
        for name, _sql in indexes:
            con.execute(f'DROP INDEX "{name}"')
        # Run n: created n * step days after (now - 30 days); 40 ms from its start to its end.
        step = SPAN_DAYS / max(1, runs)
        base = time.time() / 86400 + 2440587.5 - SPAN_DAYS - 1 / 24  # julian day; the last run an hour ago
        at = f"({base!r} + seq.n * {step!r})"
        sec = 1.0 / 86400
        t0 = time.perf_counter()
        counter = f"WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < {runs - 1}) "
        event = {
            "id": _uuid("be7c0e00", "seq.n"), "type": "'bench.started'", "version": "1",
            "payload": f"printf('{PAYLOAD}', seq.n)", "occurred_at": _ts(at), "trace_id": "printf('%032x', seq.n * 7919)",
            "idempotency_key": "NULL", "source": "'bench-seed'", "published_at": _ts(f"({at} + {0.002 * sec!r})"),
            "publish_attempts": "1",
        }
        cols, exprs = _select(con, "pipeline_event", event)
        con.execute(f"{counter} INSERT INTO pipeline_event ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM seq")
        say(f"seed: {runs:,} events in {time.perf_counter() - t0:.1f}s")
        run = {
            "id": _uuid("be7c0a00", "seq.n"), "pipeline": "'bench_noop'", "status": "'succeeded'", "trigger": "'event'",
            "created_at": _ts(at), "started_at": _ts(f"({at} + {0.003 * sec!r})"),
            "finished_at": _ts(f"({at} + {0.043 * sec!r})"), "duration_ms": "40.0", "error": "''",
            "event_id": _uuid("be7c0e00", "seq.n"), "replay_of_id": "NULL", "event_type": "'bench.started'",
        }
        cols, exprs = _select(con, "pipeline_run", run)
        con.execute(f"{counter} INSERT INTO pipeline_run ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM seq")
        say(f"seed: {runs:,} runs in {time.perf_counter() - t0:.1f}s")
        start = f"({at} + (0.005 + 0.012 * st.i) * {sec!r})"
        stage = {
            "stage": "st.name", "status": "'succeeded'", "attempts": "1", "enqueued_at": _ts(at), "started_at": _ts(start),
            "finished_at": _ts(f"({start} + {0.01 * sec!r})"), "duration_ms": "0.02", "next_attempt_at": "NULL",
            "result": "printf('{\"seq\": %d}', seq.n)", "error": "''", "traceback": "''", "attempt_log": "'[]'",
            "message_id": "printf('%08x-0000-4000-8000-%012x', st.i, seq.n)", "lease_until": "NULL",
            "worker": "'seed:0'", "run_id": _uuid("be7c0a00", "seq.n"),
        }
        cols, exprs = _select(con, "pipeline_stagerun", stage)
        stages = " UNION ALL ".join(f"SELECT {i} AS i, '{name}' AS name" for i, name in enumerate(STAGES))
        con.execute(f"{counter}, st(i, name) AS ({stages}) INSERT INTO pipeline_stagerun ({', '.join(cols)}) "
                    f"SELECT {', '.join(exprs)} FROM seq CROSS JOIN st ORDER BY seq.n, st.i")
        say(f"seed: {runs * len(STAGES):,} stage runs in {time.perf_counter() - t0:.1f}s")
        for _name, sql in indexes:
            con.execute(sql)
        con.execute("COMMIT")
        say(f"seed: {len(indexes)} indexes built again, {time.perf_counter() - t0:.1f}s in all")
        con.execute("PRAGMA locking_mode=NORMAL")
        con.execute("PRAGMA journal_mode=WAL")
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        con.close()
    return counts


def cached_store(template: Path, work_dir: Path, runs: int, say=lambda s: None) -> tuple[Path, dict]:
    """The cached seeded store for this schema (made now if missing) and what it holds."""
    work_dir.mkdir(parents=True, exist_ok=True)
    digest = schema_hash(template)
    path = work_dir / f"store-{runs}-{digest}.sqlite3"
    stamp = path.with_suffix(".json")
    if path.exists() and stamp.exists():
        info = json.loads(stamp.read_text())
        return path, {**info, "cached": True}
    for old in work_dir.glob(f"store-{runs}-*.sqlite3*"):
        old.unlink()
    for old in work_dir.glob(f"store-{runs}-*.json"):
        old.unlink()
    tmp = work_dir / f"store-{runs}-{digest}.tmp"
    copy_db(template, tmp)
    t0 = time.perf_counter()
    say(f"seed: filling {runs:,} runs into {path.name} (once; reused while the schema stays the same)")
    counts = fill(tmp, runs, say)
    os.replace(tmp, path)
    info = {"runs": runs, "schema": digest, "rows": counts, "seed_seconds": round(time.perf_counter() - t0, 1),
            "bytes": path.stat().st_size, "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    return path, {**info, "cached": False}


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database, its WAL included (the backup API)."""
    for f in (dst, Path(f"{dst}-wal"), Path(f"{dst}-shm")):
        if f.exists():
            f.unlink()
    if not Path(f"{src}-wal").exists() and src.stat().st_size > 64 * 2**20:
        shutil.copyfile(src, dst)  # a checkpointed big file: a plain copy is much faster
        return
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("template", type=Path)
    p.add_argument("work_dir", type=Path)
    p.add_argument("--runs", type=int, default=1_000_000)
    args = p.parse_args()
    path, info = cached_store(args.template, args.work_dir, args.runs, lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps({"path": str(path), **info}))


if __name__ == "__main__":
    main()
