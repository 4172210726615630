"""Turning the measurements into `latest.json` and the printed table."""
from __future__ import annotations

import statistics
from typing import Any

from tests.bench.common import percentile, spread
from tests.bench.payload import PAYLOAD_BYTES

# Targets from the issue: (name, metric, reference system, comparison, threshold)
TARGETS = [
    ("throughput >= 0.8x raw Dramatiq (defaults)", "runs_per_s", "dramatiq", ">=", 0.8),
    ("throughput >= 2x Celery's best pool", "runs_per_s", "celery_best", ">=", 2.0),
    ("CPU per run <= 1.25x raw Dramatiq's", "cpu_ms_per_run", "dramatiq", "<=", 1.25),
    ("low-load latency p50 <= 1.5x raw Dramatiq's", "latency_p50_ms", "dramatiq", "<=", 1.5),
    ("worker memory <= 1.3x raw Dramatiq's", "rss_mb_per_process", "dramatiq", "<=", 1.3),
]


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(raw: dict) -> dict:
    rounds = raw["rounds"]
    lat = sorted(raw["latency_samples_ms"])
    breakdown_keys = sorted({k for r in rounds for k in r["cpu_breakdown_ms_per_run"]})
    rss = [r["rss"]["per_process_mb"] for r in rounds if r.get("rss")]
    return {
        "label": raw["label"],
        "shape": raw["shape_note"],
        "rounds_measured": len(rounds),
        "runs_per_round": [r["runs"] for r in rounds],
        "seconds_per_round": [round(r["seconds"], 2) for r in rounds],
        "throughput_runs_per_s": spread([r["runs_per_s"] for r in rounds]),
        "stage_msgs_per_s": spread([r["stage_msgs_per_s"] for r in rounds]),
        "cpu_ms_per_run": spread([r["cpu_ms_per_run"] for r in rounds]),
        "cpu_breakdown_ms_per_run": {k: _median([r["cpu_breakdown_ms_per_run"].get(k) for r in rounds])
                                     for k in breakdown_keys},
        "producer_runs_per_s": spread([r["producer_runs_per_s"] for r in rounds]),
        "worker_rss_mb_per_process": spread(rss),
        "worker_rss_what": next((r["rss"]["what"] for r in rounds if r.get("rss")), None),
        "worker_processes": next((r["rss"]["processes"] for r in rounds if r.get("rss")), None),
        "latency_ms": {
            "n": len(lat),
            "p50": percentile(lat, 0.50),
            "p95": percentile(lat, 0.95),
            "p99": percentile(lat, 0.99),
            "mean": statistics.fmean(lat) if lat else None,
        },
        "errors": raw["errors"],
    }


def _metric(summary: dict | None, metric: str) -> float | None:
    if not summary:
        return None
    if metric == "runs_per_s":
        return summary["throughput_runs_per_s"]["median"]
    if metric == "cpu_ms_per_run":
        return summary["cpu_ms_per_run"]["median"]
    if metric == "latency_p50_ms":
        return summary["latency_ms"]["p50"]
    if metric == "rss_mb_per_process":
        return summary["worker_rss_mb_per_process"]["median"]
    raise KeyError(metric)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _celery_best(shape: dict) -> tuple[str | None, dict | None]:
    best = None
    for key in ("celery_prefork", "celery_threads"):
        s = shape.get(key)
        if s and s["throughput_runs_per_s"]["median"] is not None:
            if best is None or s["throughput_runs_per_s"]["median"] > best[1]["throughput_runs_per_s"]["median"]:
                best = (key, s)
    return best or (None, None)


def ratios_for(shape: dict, ours_key: str) -> dict:
    ours = shape.get(ours_key)
    tput = lambda k: _metric(shape.get(k), "runs_per_s")  # noqa: E731
    best_key, best = _celery_best(shape)
    return {
        "ours_vs_dramatiq": _ratio(_metric(ours, "runs_per_s"), tput("dramatiq")),
        "ours_vs_dramatiq_confirm": _ratio(_metric(ours, "runs_per_s"), tput("dramatiq_confirm")),
        "ours_vs_celery": _ratio(_metric(ours, "runs_per_s"), _metric(best, "runs_per_s")),
        "celery_best_pool": best_key,
        "ours_vs_celery_prefork": _ratio(_metric(ours, "runs_per_s"), tput("celery_prefork")),
        "ours_vs_celery_threads": _ratio(_metric(ours, "runs_per_s"), tput("celery_threads")),
        "cpu_per_run_vs_dramatiq": _ratio(_metric(ours, "cpu_ms_per_run"), _metric(shape.get("dramatiq"), "cpu_ms_per_run")),
        "latency_p50_vs_dramatiq": _ratio(_metric(ours, "latency_p50_ms"), _metric(shape.get("dramatiq"), "latency_p50_ms")),
        "rss_vs_dramatiq": _ratio(_metric(ours, "rss_mb_per_process"), _metric(shape.get("dramatiq"), "rss_mb_per_process")),
    }


def targets_for(shape: dict, ours_key: str) -> list[dict]:
    out = []
    ours = shape.get(ours_key)
    for name, metric, ref_key, op, threshold in TARGETS:
        if ref_key == "celery_best":
            ref_name, ref = _celery_best(shape)
        else:
            ref_name, ref = ref_key, shape.get(ref_key)
        value, reference = _metric(ours, metric), _metric(ref, metric)
        ratio = _ratio(value, reference)
        met = None if ratio is None else (ratio >= threshold if op == ">=" else ratio <= threshold)
        out.append({"target": name, "store": ours_key, "metric": metric, "ours": value, "reference": reference,
                    "reference_system": ref_name, "ratio": ratio, "threshold": f"{op} {threshold}", "met": met})
    return out


def build(bench: Any, store_check: dict) -> dict:
    results = {shape: {key: summarize(raw) for key, raw in systems.items()} for shape, systems in bench.results.items()}
    primary = next(iter(results), None)
    shape = results.get(primary, {})
    headline = ratios_for(shape, "ours_sqlite")
    ratios = {
        "ours_vs_dramatiq": headline["ours_vs_dramatiq"],
        "ours_vs_celery": headline["ours_vs_celery"],
        "basis": f"median throughput (runs/s), shape {primary}, ours with the default SQLite run store; "
                 "Celery = its best pool",
        "detail": {sh: {k: ratios_for(res, k) for k in ("ours_sqlite", "ours_pg") if k in res}
                   for sh, res in results.items()},
    }
    targets = [t for k in ("ours_sqlite", "ours_pg") if k in shape for t in targets_for(shape, k)]
    args = bench.args
    return {
        "schema": 1,
        "date": bench.machine.get("date"),
        "ratios": ratios,
        "targets": targets,
        "results": results,
        "run_store_check": store_check,
        "profile": bench.profile,
        "machine": bench.machine,
        "config": {
            "smoke": args.smoke,
            "rounds": args.rounds,
            "shapes": [f"{p}x{t}" for p, t in args.shape_list],
            "budget_seconds": args.budget_seconds,
            "target_seconds": args.target_seconds,
            "latency_runs": args.latency_runs,
            "payload_bytes": PAYLOAD_BYTES,
            "stages_per_run": 3,
            "truncated_by_budget": bench.truncated,
            "skipped": bench.skipped,
            "notes": bench.notes + [
                "runs/s: N runs started by one producer process as fast as it can, until N done-signals "
                "(the last stage publishes one transient message; ours: after the run is recorded done)",
                "CPU per run: CPU time of workers + producer + broker (+ PostgreSQL for that store) / N",
                "latency: emit/enqueue to done-signal received, one run in flight at a time",
                "Celery: acks on receipt (its default), no result backend, --without-gossip/mingle/heartbeat",
                "ours: settings tests.bench.settings = web.settings (run store, JSON logs + console, outbox, "
                "retries) with DEBUG off",
            ],
        },
        "wall_seconds": None,
    }


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def _spread(s: dict, digits: int = 1) -> str:
    if s["median"] is None:
        return "-"
    if s["min"] == s["max"]:
        return _fmt(s["median"], digits)
    return f"{_fmt(s['median'], digits)} [{_fmt(s['min'], digits)}-{_fmt(s['max'], digits)}]"


def table(result: dict) -> str:
    lines = []
    m = result.get("machine", {})
    lines.append("")
    lines.append(f"make bench  {result.get('date')}  {m.get('cores')} cores ({m.get('cpu_model', '')})  Python {m.get('python')}  "
                 f"RabbitMQ {m.get('rabbitmq', {}).get('version', '?')}  "
                 + "  ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()
                             if k in ("dramatiq", "celery", "Django", "pika", "psycopg")))
    lines.append(f"payload {PAYLOAD_BYTES} bytes, 3 no-op stages per run; rounds {result['config']['rounds']}; "
                 "median [min-max] over rounds; CPU split = workers/producer/broker/db")
    header = (f"{'system':38s} {'runs/s':>22s} {'stage msg/s':>11s} {'vs Dramatiq':>11s} {'CPU ms/run':>20s} "
              f"{'CPU split':>21s} {'RSS MB/proc':>11s} {'latency p50/p95/p99 ms':>24s}")
    for shape, systems in result["results"].items():
        lines.append("")
        lines.append(f"== workers {shape} (processes x threads; Celery: 2 workers x {shape.split('x')[1]} pool slots) ==")
        lines.append(header)
        lines.append("-" * len(header))
        ref = systems.get("dramatiq", {}).get("throughput_runs_per_s", {}).get("median")
        for key, s in systems.items():
            tput = s["throughput_runs_per_s"]
            ratio = (tput["median"] / ref) if (ref and tput["median"] is not None) else None
            split = "/".join(_fmt(s["cpu_breakdown_ms_per_run"].get(k), 2)
                             for k in ("workers", "producer", "broker", "db") if k in s["cpu_breakdown_ms_per_run"])
            lat = s["latency_ms"]
            latency = "-" if not lat["n"] else f"{_fmt(lat['p50'])}/{_fmt(lat['p95'])}/{_fmt(lat['p99'])}"
            label = s["label"] + (" !" if s["errors"] else "")
            lines.append(
                f"{label[:38]:38s} {_spread(tput):>22s} {_fmt(s['stage_msgs_per_s']['median'], 0):>11s} "
                f"{(_fmt(ratio, 2) + 'x') if ratio is not None else '-':>11s} {_spread(s['cpu_ms_per_run'], 2):>20s} "
                f"{split:>21s} {_fmt(s['worker_rss_mb_per_process']['median']):>11s} {latency:>24s}")
        for key, s in systems.items():
            for err in s["errors"]:
                lines.append(f"  ! {key}: {err.splitlines()[0][:160]}")
    r = result["ratios"]
    lines.append("")
    lines.append(f"ratios (throughput, higher is better for us): ours_vs_dramatiq = {_fmt(r['ours_vs_dramatiq'], 2)}, "
                 f"ours_vs_celery = {_fmt(r['ours_vs_celery'], 2)}   ({r['basis']})")
    for shape, per_store in r["detail"].items():
        for store, d in per_store.items():
            lines.append(f"  {shape} {store:11s}: vs Dramatiq {_fmt(d['ours_vs_dramatiq'], 2)}, vs Dramatiq+confirms "
                         f"{_fmt(d['ours_vs_dramatiq_confirm'], 2)}, vs Celery best ({d['celery_best_pool'] or '-'}) "
                         f"{_fmt(d['ours_vs_celery'], 2)}; CPU/run x{_fmt(d['cpu_per_run_vs_dramatiq'], 2)}, "
                         f"p50 x{_fmt(d['latency_p50_vs_dramatiq'], 2)}, RSS x{_fmt(d['rss_vs_dramatiq'], 2)} of Dramatiq's")
    if result["targets"]:
        lines.append("")
        lines.append("targets (shape " + next(iter(result["results"]), "?") + "):")
        for t in result["targets"]:
            state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            lines.append(f"  [{state:7s}] {t['store']:11s} {t['target']:45s} ratio {_fmt(t['ratio'], 2):>6s} "
                         f"(ours {_fmt(t['ours'], 2)} vs {t['reference_system']} {_fmt(t['reference'], 2)})")
    for store, check in (result.get("run_store_check") or {}).items():
        if "runs_by_status" in check:
            ok = check["runs_by_status"].get("succeeded", 0)
            others = {k: v for k, v in check["runs_by_status"].items() if k != "succeeded"}
            lines.append(f"run store {store}: {ok}/{check['runs_started']} runs succeeded"
                         + (f", others: {others}" if others else "")
                         + (f", {check['events_unpublished']} events unpublished" if check.get("events_unpublished") else ""))
        elif "error" in check:
            lines.append(f"run store {store}: check failed: {check['error'][:200]}")
    skipped = result["config"].get("skipped") or {}
    if skipped:
        lines.append("")
        lines.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if result["config"].get("truncated_by_budget"):
        lines.append("note: some rounds were skipped to stay within --budget-seconds")
    return "\n".join(lines)
