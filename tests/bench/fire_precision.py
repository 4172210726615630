"""Fire precision of the scheduler: how late each fire starts its run (actual minus scheduled
time), over a 1-second schedule run by a real `runscheduler` for --seconds. Writes
var/bench/schedule.json and merges it into var/bench/latest.json.

    .venv/bin/python -m tests.bench.fire_precision [--seconds 30]   (PIPELINE_BROKER_URL: a running broker)"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "bench"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    work = OUT / "fire-precision"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="web.settings", DATABASE_URL=f"sqlite:///{work / 'db.sqlite3'}",
               PIPELINE_LOG_DIR=str(work / "log"), PIPELINE_LOG_FORMAT="json")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    create = ("from schedules import operations; operations.create({'name': 'precision', 'pipeline': 'stock_report', "
              "'interval_seconds': 1, 'catch_up': 'none'})")
    subprocess.run([*manage, "shell", "-c", create], cwd=ROOT, env=env, check=True, capture_output=True)
    with open(work / "scheduler.out", "wb") as out:
        scheduler = subprocess.Popen([*manage, "runscheduler", "--only", "precision"], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(args.seconds)
        os.killpg(scheduler.pid, signal.SIGTERM)
        scheduler.wait(30)
    delays = []
    for raw in (work / "log" / "scheduler.jsonl").read_text().splitlines():
        line = json.loads(raw)
        if line.get("event") == "schedule.fired" and line.get("reason") == "schedule":
            delays.append(line["fire_delay_ms"])
    if not delays:
        print("fire precision: no fire recorded", file=sys.stderr)
        return 1
    result = {"fires": len(delays), "p50_ms": round(_quantile(delays, 0.5), 2), "p99_ms": round(_quantile(delays, 0.99), 2),
              "max_ms": round(max(delays), 2), "min_ms": round(min(delays), 2), "seconds": args.seconds}
    (OUT / "schedule.json").write_text(json.dumps(result, indent=2))
    latest = OUT / "latest.json"
    if latest.exists():
        data = json.loads(latest.read_text())
        data["schedule_fire_delay"] = result
        trace = OUT / "trace.json"
        if trace.exists():
            data["trace_1gib"] = json.loads(trace.read_text())
        latest.write_text(json.dumps(data, indent=2))
    print(f"scheduler fire precision over {len(delays)} fires of a 1 s schedule: "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms (actual minus scheduled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
