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
# Its own stores; in the PostgreSQL pass of make test, which has no SQLite-only tests to run.
@pytest.mark.store_independent(run_in="postgres")
# The smoke's work is fixed (a handful of runs per system), its duration is not: about 90 s on an
# idle 2-core machine, twice that beside a CPU-bound load. The bounds below only catch a hang.
@pytest.mark.timeout(660)
def test_bench_smoke_writes_results(tmp_path):
    out = tmp_path / "latest.json"
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)
    completed = subprocess.run(
        [sys.executable, "-m", "tests.bench.run", "--smoke", "--skip-postgres", "--budget-seconds", "50",
         "--broker-url", settings.PIPELINE_BROKER_URL, "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-5000:]}"
    assert "ours_vs_dramatiq" in completed.stdout  # the table was printed

    result = json.loads(out.read_text())
    assert set(result["ratios"]) >= {"ours_vs_dramatiq", "ours_vs_celery", "ours_vs_celery_results",
                                     "ours_vs_django_dramatiq_admin", "rss_vs_django_dramatiq"}
    for key in ("ours_sqlite", "dramatiq"):  # first: a system that failed has no ratio, this says why
        assert not result["results"]["2x8"][key]["errors"], (key, result["results"]["2x8"][key]["errors"])
    assert result["ratios"]["ours_vs_dramatiq"] > 0
    for key in ("cores", "python", "rabbitmq", "packages", "date"):
        assert key in result["machine"], key
    shape = result["results"]["2x8"]
    expected = {"floor", "dramatiq", "dramatiq_confirm", "ours_sqlite", "ours_sqlite_noinline", "dj_dramatiq_admin"}
    try:
        import celery  # noqa: F401

        expected |= {"celery_prefork", "celery_threads"}
        try:
            import django_celery_results  # noqa: F401

            expected.add("celery_results")
        except ImportError:
            assert "celery_results" in result["config"]["skipped"]
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
    # Our writers say where a batch's time goes while it holds the write lock (writer_stats.py);
    # peers have no such writer.
    writer = shape["ours_sqlite"]["writer"]
    assert writer["batches_per_run"] > 0 and writer["ops_per_batch"] >= 1, writer
    assert 0 < writer["hold_cpu_ms_per_batch"] <= writer["hold_ms_per_batch"] * 1.05, writer
    assert shape["dramatiq"]["writer"] is None
    assert {t["target"] for t in result["targets"]}
    assert result["ratios"]["rss_vs_django_dramatiq"] > 0
    for key in ("ours_sqlite", "ours_sqlite_noinline", "ours_sqlite_empty", "ours_sqlite_1m"):
        check = result["run_store_check"][key]
        assert check["runs_by_status"] == {"succeeded": check["runs_started"]}, (key, check)

    # The scaling figures, at toy size: every one measured, every fan-in stage started once.
    scaling = result["scaling"]
    assert not scaling["errors"], scaling["errors"]
    for key in ("ours_sqlite", "ours_sqlite_noinline"):
        assert set(scaling["chains"][key]) == {"3", "10", "30"}, key
        assert all(f["cpu_ms_per_stage"]["median"] > 0 for f in scaling["chains"][key].values())
    assert scaling["payload_64k"]["runs_per_s"]["median"] > 0
    assert len(scaling["fan_out"]) == 2
    assert all(f["fanin_started_exactly_once"] for f in scaling["fan_out"].values()), scaling["fan_out"]
    assert scaling["stored_runs"]["stored"]["cpu_ms_per_run"]["median"] > 0
    assert scaling["stored_runs"]["empty"]["cpu_ms_per_run"]["median"] > 0
    assert {"chain30_vs_chain3_cpu_per_stage", "fanin_large_vs_small_cpu_per_branch",
            "stored_vs_empty_cpu_per_run"} <= set(scaling["ratios"])
