"""How long `manage.py trace` takes on a large log, and how much memory it needs.

Writes a JSON-lines log of the given size (default 1 GiB) made of many runs' lines, with one
target run's lines spread through it, then times `manage.py trace <run id>` on it and reads the
child's peak resident memory. Usage: .venv/bin/python infra/trace_bench.py [--gib 1.0] [--keep]"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def line(run_id: str, trace_id: str, event: str, stage: str, attempt: int, ts: str) -> str:
    return json.dumps({
        "event": event, "run_id": run_id, "trace_id": trace_id, "event_id": str(uuid.uuid4()), "pipeline": "fulfil_order",
        "stage": stage, "attempt": attempt, "duration_ms": 1.234, "outcome": "succeeded", "level": "info",
        "logger": "pipeline.states", "timestamp": ts, "process": "worker", "pid": 4242, "host": "worker-1",
        "message_id": str(uuid.uuid4()),
    }) + "\n"


def write_log(path: Path, size: int, target: str, target_trace: str) -> int:
    """Writes about `size` bytes; returns the number of lines."""
    block = "".join(
        line(str(uuid.uuid4()), uuid.uuid4().hex, event, stage, 1, f"2026-01-01T00:00:{i % 60:02d}.000000Z")
        for i in range(2000)
        for stage in ("reserve_stock", "charge_payment")
        for event in ("stage.started", "stage.succeeded")
    ).encode()
    lines_per_block = 8000
    blocks = max(1, size // len(block))
    count = 0
    with open(path, "wb") as out:
        for b in range(blocks):
            out.write(block)
            count += lines_per_block
            if b % max(1, blocks // 6) == 0:  # the target run's lines, spread through the file
                stage = ("reserve_stock", "charge_payment", "ship_order")[min(2, b * 3 // blocks)]
                for event in ("stage.started", "stage.succeeded"):
                    out.write(line(target, target_trace, event, stage, 1, f"2026-01-01T00:01:{b % 60:02d}Z").encode())
                    count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="keep the generated log")
    args = parser.parse_args()
    out_dir = ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "trace-bench.jsonl"
    target, target_trace = str(uuid.uuid4()), uuid.uuid4().hex
    started = time.perf_counter()
    lines = write_log(path, int(args.gib * 1024**3), target, target_trace)
    written = time.perf_counter() - started
    size = path.stat().st_size
    env = dict(os.environ, PIPELINE_LOG_DIR=str(out_dir / "trace-bench-logs"), DJANGO_SETTINGS_MODULE="web.settings")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "manage.py", "trace", target, str(path), "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if not args.keep:
        path.unlink()
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    attempts = len(json.loads(result.stdout)["runs"][0]["attempts"])
    report = {"log_bytes": size, "log_lines": lines, "trace_seconds": round(elapsed, 2),
              "mib_per_second": round(size / 1024**2 / elapsed, 1), "peak_rss_mib": round(peak_mib, 1),
              "attempts_found": attempts, "generate_seconds": round(written, 2)}
    (out_dir / "trace.json").write_text(json.dumps(report, indent=2))
    print(f"trace over {size / 1024**3:.2f} GiB ({lines:,} lines): {elapsed:.1f} s "
          f"({report['mib_per_second']} MiB/s), peak RSS {peak_mib:.0f} MiB, {attempts} attempts found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
