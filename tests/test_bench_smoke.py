"""`make bench` at toy size: every system starts, moves a handful of runs, and the results file has
the keys the contract promises. No timing is asserted: this checks the machinery, not the speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_bench_smoke_writes_results(tmp_path):
    out = tmp_path / "latest.json"
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--smoke", "--skip-postgres", "--budget-seconds", "50",
         "--broker-url", settings.PIPELINE_BROKER_URL, "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-5000:]}"
    assert "ours_vs_dramatiq" in completed.stdout  # the table was printed

    result = json.loads(out.read_text())
    assert set(result["ratios"]) >= {"ours_vs_dramatiq", "ours_vs_celery"}
    assert result["ratios"]["ours_vs_dramatiq"] > 0
    for key in ("cores", "python", "rabbitmq", "packages", "date"):
        assert key in result["machine"], key
    shape = result["results"]["2x8"]
    expected = {"floor", "dramatiq", "dramatiq_confirm", "ours_sqlite"}
    try:
        import celery  # noqa: F401

        expected |= {"celery_prefork", "celery_threads"}
    except ImportError:
        assert result["ratios"]["ours_vs_celery"] is None
        assert "celery_threads" in result["config"]["skipped"]
    assert set(shape) >= expected
    for key in expected:
        summary = shape[key]
        assert not summary["errors"], (key, summary["errors"])
        assert summary["throughput_runs_per_s"]["median"] > 0, key
        assert summary["cpu_ms_per_run"]["median"] is not None, key
        if key != "floor":
            assert summary["latency_ms"]["n"] > 0 and summary["latency_ms"]["p50"] > 0, key
            assert summary["worker_rss_mb_per_process"]["median"] > 0, key
    assert {t["target"] for t in result["targets"]}
    check = result["run_store_check"]["ours_sqlite"]
    assert check["runs_by_status"] == {"succeeded": check["runs_started"]}
