"""Sampling our workers under load with py-spy, and sorting the samples into the costs we add.

`run.py --profile SECONDS` calls `profile_under_load` on the SQLite worker processes of the first
shape while a throughput measurement runs; the raw stacks stay in `<work dir>/profile/`."""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

CONNECTION_FUNCS = {"connect", "get_new_connection", "init_connection_state", "_close", "close",
                    "close_if_unusable_or_obsolete", "close_old_connections", "is_usable",
                    "close_if_health_check_failed", "get_connection_params"}
EXECUTE_FUNCS = {"_execute", "execute", "executemany", "_executemany"}
# Leaves where a thread waits rather than works (py-spy's idle detection lets some through).
IDLE_LEAVES = {"wait", "poll", "select", "sleep", "_wait_for_tstate_lock", "acquire_timeout"}
IDLE = "idle: waiting for work (excluded)"


def py_spy() -> str | None:
    return shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy")
                                      if (Path(sys.executable).parent / "py-spy").exists() else None)


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        out.append((m.group("func"), m.group("file")) if m else (raw.strip(), ""))
    return out


def _name(func: str) -> str:
    """py-spy names methods `Class.method`: the bare function name."""
    return func.rsplit(".", 1)[-1]


def _area(func: str, file: str) -> str | None:
    f = file.replace("\\", "/")
    if "structlog/" in f or f.endswith("logging/__init__.py") or "pipeline/logging.py" in f:
        return "logging (structlog + stdlib handlers, JSON file + console)"
    if "django/db/" in f or "sqlite3" in f or "psycopg" in f:
        return "database"
    if "pika/" in f or "dramatiq/brokers/" in f:
        return "broker I/O (pika: publish, consume, ack)"
    if "pydantic" in f or f.endswith("json/encoder.py") or f.endswith("json/decoder.py") or f.endswith("json/__init__.py"):
        return "serialization (json, pydantic)"
    if "tests/bench/" in f:
        return "bench harness (done-signal)"
    return None


def classify(frames: list[tuple[str, str]]) -> str:
    """The cost a sample belongs to: the outermost library area under the engine/dramatiq frames;
    database samples split into connection set-up/tear-down, commit, SQL execution and ORM Python."""
    files = [fl for _, fl in frames]
    funcs = [fn for fn, _ in frames]
    if any("sqlite3InvokeBusyHandler" in fn for fn in funcs):
        return "database: waiting for the SQLite write lock (busy-handler sleeps)"
    if any(fn.startswith("fdatasync") or fn.startswith("fsync") for fn in funcs):
        return "database: fsync"
    leaf_func, leaf_file = frames[-1] if frames else ("", "")
    if "libc" in leaf_file or "libpthread" in leaf_file:  # native mode: find the Python leaf
        py_frames = [f for f in frames if f[1].endswith(".py") or ".py:" in f[1]]
        if py_frames:
            leaf_func, leaf_file = py_frames[-1]
    if _name(leaf_func) in IDLE_LEAVES and "sqlite3" not in leaf_file and "psycopg" not in leaf_file:
        return IDLE
    if _name(leaf_func) == "run" and "time_limit.py" in leaf_file:
        return IDLE
    for i, (func, file) in enumerate(frames):
        area = _area(func, file)
        if area is None:
            continue
        below = frames[i:]
        names = [_name(fn) for fn, _ in below]
        if area == "database":
            if any(fn in CONNECTION_FUNCS for fn in names):
                return "database: connection open/close (per message)"
            if any(fn in ("_commit", "commit") for fn in names):
                return "database: commit (incl. waiting for the write lock / fsync)"
            if any(_name(fn) in EXECUTE_FUNCS and ("backends" in fl or "psycopg" in fl) for fn, fl in below):
                return "database: SQL execution (driver; incl. waiting for the write lock)"
            return "database: ORM Python (querysets, SQL compiler, model rows)"
        if area.startswith("logging"):
            if any(fn.endswith("StreamHandler.emit") for fn, _ in below):
                return "logging: console handler (stderr, piped through the dramatiq master)"
            if any(fn.endswith("AppendFileHandler.emit") for fn, _ in below):
                return "logging: JSON file handler (format + write)"
            return "logging: structlog processors, stdlib dispatch"
        return area
    if any("pipeline/" in fl for fl in files):
        return "engine Python (pipeline/*)"
    if any("dramatiq/" in fl for fl in files):
        return "dramatiq worker machinery"
    if any("django/" in fl for fl in files):
        return "django other"
    return "other (threads, stdlib)"


def summarize(raw_files: list[Path]) -> dict[str, Any]:
    categories: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for path in raw_files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = _frames(stack)
            total += n
            categories[classify(frames)] += n
            seen = set()
            for func, file in frames:
                if "pipeline/" in file or "django_dramatiq" in file or "tests/bench" in file:
                    key = f"{func} ({file.split('site-packages/')[-1]})"
                    if key not in seen:
                        inclusive[key] += n
                        seen.add(key)
            func, file = frames[-1]
            leaves[f"{func} ({file.split('site-packages/')[-1]})"] += n
    idle = categories.pop(IDLE, 0)
    busy = total - idle
    pct = lambda n: round(100.0 * n / busy, 1) if busy else 0.0  # noqa: E731
    return {
        "samples": total,
        "idle_samples_excluded": idle,
        "categories_pct": {k: pct(v) for k, v in categories.most_common()},
        "engine_functions_inclusive_pct": {k: pct(v) for k, v in inclusive.most_common(25)},
        "top_leaf_functions_pct": {k: pct(v) for k, v in leaves.most_common(20)},
    }


def profile_under_load(pids: list[int], seconds: float, out_dir: Path, load: Callable[[], dict],
                       mode: str = "gil") -> dict[str, Any]:
    """py-spy on `pids` for `seconds` while `load()` runs.

    mode "gil": only the thread holding the GIL is sampled, so the shares are shares of the
    workers' Python CPU time (converted to ms per run with the measured worker CPU);
    mode "native": C frames too, sleeping threads included, which shows where a stage *waits*
    (SQLite's busy handler, fsync); its shares are of wall time, not CPU."""
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in pids:
        path = out_dir / f"worker-{pid}.txt"
        spies.append((path, subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
             "--format", "raw", "--output", str(path),
             *(["--native"] if mode == "native" else ["--gil", "--nonblocking"])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(out_dir / f"py-spy-{pid}.err", "wb"),
        )))
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(load()), daemon=True)
    worker.start()
    for _path, proc in spies:
        try:
            proc.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
    worker.join(seconds + 120)
    files = [p for p, _ in spies if p.exists()]
    if not files:
        return {"error": "py-spy wrote nothing (ptrace not permitted?)", "load": result}
    summary = summarize(files)
    summary["mode"] = mode
    cpu = result.get("cpu_breakdown_ms_per_run", {}).get("workers")
    if cpu and mode == "gil":
        summary["worker_cpu_ms_per_run"] = cpu
        summary["categories_ms_per_run"] = {k: round(v * cpu / 100, 2) for k, v in summary["categories_pct"].items()}
    summary["load"] = {k: result.get(k) for k in ("runs", "seconds", "runs_per_s", "cpu_ms_per_run", "cpu_breakdown_ms_per_run")}
    summary["raw_stacks"] = [str(p) for p in files]
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    if not summary or "error" in summary:
        return f"profile: {summary.get('error') if summary else 'none'}"
    what = "shares of Python CPU (GIL holder)" if summary.get("mode") == "gil" else "shares of wall time, C frames"
    lines = [f"profile of our workers under load, {what} ({summary['samples'] - summary.get('idle_samples_excluded', 0)} samples; "
             f"{summary.get('load', {}).get('runs_per_s') or 0:.0f} runs/s, worker CPU {summary.get('worker_cpu_ms_per_run') or 0:.1f} ms/run):"]
    ms = summary.get("categories_ms_per_run", {})
    for k, v in summary["categories_pct"].items():
        lines.append(f"  {v:5.1f}%  {('%.2f ms/run' % ms[k]) if k in ms else '':>12s}  {k}")
    lines.append("  engine functions, inclusive:")
    for k, v in list(summary["engine_functions_inclusive_pct"].items())[:12]:
        lines.append(f"  {v:5.1f}%  {k}")
    return "\n".join(lines)
