"""What the group-commit writers do under load: batches, operations per batch, and where the time
goes while a batch holds the store's write lock (issue 19). On SQLite the writers of every process
(two worker processes and the producer) queue on one lock file, so a batch's hold time is
everybody's wait; measured in the bench (2x8), a batch held it ~4.5 ms while its writer thread ran
only ~1.5 ms of it and spent ~2.5 ms runnable but not running (the two cores busy with other
threads: lock-holder preemption).

Installed by the bench app (`tests.bench.benchapp`) in every process of our systems when
`BENCH_WRITER_STATS_DIR` is set: it wraps the lock's acquire/release and the writer's batch, and
each process keeps its cumulative counters in `<dir>/writer-<pid>.json` (rewritten at most every
`DUMP_EVERY_SECONDS`). The driver (`tests/bench/run.py`) reads the directory before and after a
throughput measurement and reports the difference (`delta`). Not part of the engine: nothing here
runs unless the bench asks for it."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

DUMP_EVERY_SECONDS = 0.05  # a file rewrite per process at most 20 times a second: the window's last 50 ms may be missing
FIELDS = ("batches", "ops", "wait_s", "hold_s", "hold_cpu_s", "hold_runqueue_s")


_schedstat = threading.local()  # this thread's /proc schedstat file, kept open


def _runqueue_seconds() -> float:
    """This thread's time spent runnable but waiting for a CPU (Linux schedstat), 0 elsewhere.
    The file stays open and is read with pread: opening it twice a batch cost 3.5 % of a bench
    worker's CPU (py-spy), counted against us."""
    try:
        fd = getattr(_schedstat, "fd", None)
        if fd is None:
            fd = _schedstat.fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(fd, 128, 0).split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def install(directory: str) -> None:
    from pipeline._sqlite_lock import CrossProcessLock
    from pipeline._writer import GroupCommitWriter

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    totals = dict.fromkeys(FIELDS, 0.0)
    local = threading.local()
    last_dump = [0.0]
    acquire, release, execute = CrossProcessLock.acquire, CrossProcessLock.release, GroupCommitWriter._execute

    def timed_acquire(self: Any) -> None:
        started = time.perf_counter()
        acquire(self)
        local.held_at = time.perf_counter()
        local.cpu_at, local.runqueue_at = time.thread_time(), _runqueue_seconds()
        totals["wait_s"] += local.held_at - started

    def timed_release(self: Any) -> None:
        release(self)
        now = time.perf_counter()
        totals["hold_s"] += now - local.held_at
        totals["hold_cpu_s"] += time.thread_time() - local.cpu_at
        totals["hold_runqueue_s"] += _runqueue_seconds() - local.runqueue_at
        if now - last_dump[0] >= DUMP_EVERY_SECONDS:
            last_dump[0] = now
            _dump(folder, totals)

    def counted_execute(self: Any, batch: list) -> Any:
        totals["batches"] += 1
        totals["ops"] += len(batch)
        return execute(self, batch)

    CrossProcessLock.acquire = timed_acquire  # type: ignore[method-assign]
    CrossProcessLock.release = timed_release  # type: ignore[method-assign]
    GroupCommitWriter._execute = counted_execute  # type: ignore[method-assign]


def _dump(folder: Path, totals: dict[str, float]) -> None:
    path = folder / f"writer-{os.getpid()}.json"  # the pid now: worker processes fork after set-up
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(totals))
        os.replace(tmp, path)
    except OSError:
        pass


def snapshot(directory: str | Path) -> dict[str, float]:
    """The counters of every process that wrote to `directory`, summed."""
    out = dict.fromkeys(FIELDS, 0.0)
    for path in Path(directory).glob("writer-*.json"):
        try:
            counters = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in FIELDS:
            out[key] += float(counters.get(key, 0.0))
    return out


def delta(before: dict[str, float], after: dict[str, float], seconds: float, runs: int) -> dict[str, float] | None:
    """Per batch (ms, operations) and per run (batches), and the share of the measurement's wall
    time the lock was held (by any process; above 1 on PostgreSQL, where writers do not queue)."""
    d = {key: after[key] - before[key] for key in FIELDS}
    batches = d["batches"]
    if batches <= 0 or seconds <= 0 or runs <= 0:
        return None
    return {
        "batches_per_run": batches / runs,
        "ops_per_batch": d["ops"] / batches,
        "lock_wait_ms_per_batch": d["wait_s"] / batches * 1000,
        "hold_ms_per_batch": d["hold_s"] / batches * 1000,
        "hold_cpu_ms_per_batch": d["hold_cpu_s"] / batches * 1000,
        "hold_runqueue_ms_per_batch": d["hold_runqueue_s"] / batches * 1000,
        "held_share_of_wall": d["hold_s"] / seconds,
    }
