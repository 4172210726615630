"""Turning the measurements into `latest.json` and the printed table."""
from __future__ import annotations

import statistics
from typing import Any

from tests.bench.common import percentile, spread
from tests.bench.payload import BIG_PAYLOAD_BYTES, PAYLOAD_BYTES

# Targets from the issues (19): {store: [(name, metric, reference system, comparison, threshold)]}
TARGETS = {
    "ours_sqlite": [
        ("throughput >= 0.8x raw Dramatiq (defaults)", "runs_per_s", "dramatiq", ">=", 0.8),
        ("throughput >= 2x Celery's best pool", "runs_per_s", "celery_best", ">=", 2.0),
        ("CPU per run <= 1.5x raw Dramatiq's", "cpu_ms_per_run", "dramatiq", "<=", 1.5),
        ("emit->done p50 <= 1.5x raw Dramatiq's", "latency_p50_ms", "dramatiq", "<=", 1.5),
        ("throughput >= 3x Celery + django-celery-results", "runs_per_s", "celery_results", ">=", 3.0),
        ("throughput >= 3x django_dramatiq + AdminMiddleware", "runs_per_s", "dj_dramatiq_admin", ">=", 3.0),
        ("worker memory <= 1.15x django_dramatiq's", "rss_mb_per_process", "dj_dramatiq_admin", "<=", 1.15),
    ],
    "ours_pg": [
        ("throughput >= 0.5x raw Dramatiq (defaults)", "runs_per_s", "dramatiq", ">=", 0.5),
    ],
    # Flow control (issue 14): bench_noop with Concurrency(limit=8, key=...) over 64 keys.
    "ours_sqlite_flow": [
        ("throughput with a concurrency key (8 per key, 64 keys) >= 0.7x without flow control", "runs_per_s",
         "ours_sqlite", ">=", 0.7),
    ],
}
# The scaling figures' targets: (name, threshold)
SCALING_TARGETS = {
    "chain": 1.3,  # 30-stage chain CPU per stage <= 1.3x the 3-stage chain's
    "fan_in_cpu": 1.5,  # 1,000-branch fan-in CPU per branch <= 1.5x the 100-branch one's
    "stored": 1.2,  # CPU per run with 1M runs stored <= 1.2x an empty store's
}


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
        "writer": _writer_summary([r.get("writer") for r in rounds]),
        "errors": raw["errors"],
    }


def _writer_summary(per_round: list[dict | None]) -> dict | None:
    """Medians over rounds of our group-commit writers' figures (tests/bench/writer_stats.py)."""
    rounds = [r for r in per_round if r]
    if not rounds:
        return None
    return {key: _median([r.get(key) for r in rounds]) for key in rounds[0]}


def _writer_line(key: str, w: dict) -> str:
    """SQLite: every process's batches queue on one lock file; PostgreSQL: they overlap."""
    head = (f"  writer {key}: {_fmt(w['batches_per_run'], 2)} batches/run of {_fmt(w['ops_per_batch'], 1)} ops; ")
    split = (f"{_fmt(w['hold_ms_per_batch'], 2)} ms (writer CPU {_fmt(w['hold_cpu_ms_per_batch'], 2)}, "
             f"runnable without a CPU {_fmt(w['hold_runqueue_ms_per_batch'], 2)})")
    if "pg" in key.split("_"):
        return head + f"a batch's transaction takes {split}; the processes' batches overlap (no lock file)"
    return (head + f"a batch holds the write lock {split}, waits {_fmt(w['lock_wait_ms_per_batch'], 2)} ms for it; "
            f"held {_fmt(w['held_share_of_wall'] * 100, 0)}% of the time")


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
        "ours_vs_celery_results": _ratio(_metric(ours, "runs_per_s"), tput("celery_results")),
        "ours_vs_django_dramatiq_admin": _ratio(_metric(ours, "runs_per_s"), tput("dj_dramatiq_admin")),
        "rss_vs_django_dramatiq": _ratio(_metric(ours, "rss_mb_per_process"),
                                         _metric(shape.get("dj_dramatiq_admin"), "rss_mb_per_process")),
    }


def targets_for(shape: dict, ours_key: str) -> list[dict]:
    out = []
    ours = shape.get(ours_key)
    for name, metric, ref_key, op, threshold in TARGETS.get(ours_key, []):
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


def _target(name: str, store: str, metric: str, value, reference, reference_system: str, threshold: float,
            op: str = "<=", met: bool | None = None) -> dict:
    ratio = _ratio(value, reference)
    if met is None and ratio is not None:
        met = ratio >= threshold if op == ">=" else ratio <= threshold
    return {"target": name, "store": store, "metric": metric, "ours": value, "reference": reference,
            "reference_system": reference_system, "ratio": ratio, "threshold": f"{op} {threshold}", "met": met}


def scaling(extras: dict | None) -> tuple[dict | None, list[dict]]:
    """The scaling figures with their ratios, and their target lines."""
    if not extras:
        return None, []
    out = dict(extras)
    med = lambda d, k: (d or {}).get(k, {}).get("median")  # noqa: E731
    chains = extras.get("chains", {})
    ratios: dict[str, Any] = {}
    for key, suffix in (("ours_sqlite", ""), ("ours_sqlite_noinline", "_noinline")):
        c = chains.get(key, {})
        ratios[f"chain30_vs_chain3_cpu_per_stage{suffix}"] = _ratio(med(c.get("30"), "cpu_ms_per_stage"),
                                                                     med(c.get("3"), "cpu_ms_per_stage"))
        ratios[f"chain10_vs_chain3_cpu_per_stage{suffix}"] = _ratio(med(c.get("10"), "cpu_ms_per_stage"),
                                                                     med(c.get("3"), "cpu_ms_per_stage"))
    inline, plain = chains.get("ours_sqlite", {}), chains.get("ours_sqlite_noinline", {})
    ratios["inline_vs_noinline_runs_per_s"] = {n: _ratio(med(inline.get(n), "runs_per_s"), med(plain.get(n), "runs_per_s"))
                                               for n in inline if n in plain}
    ratios["inline_vs_noinline_cpu_per_run"] = {n: _ratio(med(inline.get(n), "cpu_ms_per_run"),
                                                          med(plain.get(n), "cpu_ms_per_run"))
                                                for n in inline if n in plain}
    big = extras.get("payload_64k")
    chain3 = inline.get("3")
    ratios["payload64k_vs_chain3_runs_per_s"] = _ratio(med(big, "runs_per_s"), med(chain3, "runs_per_s"))
    ratios["payload64k_vs_chain3_cpu_per_run"] = _ratio(med(big, "cpu_ms_per_run"), med(chain3, "cpu_ms_per_run"))
    fan = extras.get("fan_out", {})
    widths = sorted(fan, key=int)
    small, large = (fan[widths[0]], fan[widths[-1]]) if len(widths) >= 2 else (None, None)
    ratios["fanin_large_vs_small_cpu_per_branch"] = _ratio(large and large["cpu_ms_per_branch"],
                                                           small and small["cpu_ms_per_branch"])
    stored = extras.get("stored_runs") or {}
    ratios["stored_vs_empty_cpu_per_run"] = _ratio(med(stored.get("stored"), "cpu_ms_per_run"),
                                                   med(stored.get("empty"), "cpu_ms_per_run"))
    ratios["stored_vs_empty_runs_per_s"] = _ratio(med(stored.get("stored"), "runs_per_s"),
                                                  med(stored.get("empty"), "runs_per_s"))
    out["ratios"] = ratios

    targets = []
    c = chains.get("ours_sqlite", {})
    if c.get("30") or c.get("3"):
        targets.append(_target("30-stage chain CPU per stage <= 1.3x the 3-stage chain's", "ours_sqlite",
                               "cpu_ms_per_stage", med(c.get("30"), "cpu_ms_per_stage"),
                               med(c.get("3"), "cpu_ms_per_stage"), "3-stage chain", SCALING_TARGETS["chain"]))
    if large is not None:
        lw, sw = f"{int(widths[-1]):,}", f"{int(widths[0]):,}"
        targets.append(_target(f"{lw}-branch fan-in stage started exactly once", "ours_sqlite", "fanin_starts",
                               large["fanin_start_signals"]["max_per_run"], 1, "once", 1.0, op="==",
                               met=bool(large["fanin_started_exactly_once"])))
        targets.append(_target(f"{lw}-branch fan-in CPU per branch <= 1.5x the {sw}-branch one's", "ours_sqlite",
                               "cpu_ms_per_branch", large["cpu_ms_per_branch"], small["cpu_ms_per_branch"],
                               f"{sw}-branch fan-out", SCALING_TARGETS["fan_in_cpu"]))
    if stored.get("stored") or stored.get("empty"):
        targets.append(_target(f"CPU per run with {stored.get('runs_stored', 0):,} runs stored <= 1.2x an empty store's",
                               "ours_sqlite", "cpu_ms_per_run", med(stored.get("stored"), "cpu_ms_per_run"),
                               med(stored.get("empty"), "cpu_ms_per_run"), "empty store", SCALING_TARGETS["stored"]))
    return out, targets


def build(bench: Any, store_check: dict) -> dict:
    results = {shape: {key: summarize(raw) for key, raw in systems.items()} for shape, systems in bench.results.items()}
    primary = next(iter(results), None)
    shape = results.get(primary, {})
    headline = ratios_for(shape, "ours_sqlite")
    ratios = {
        "ours_vs_dramatiq": headline["ours_vs_dramatiq"],
        "ours_vs_celery": headline["ours_vs_celery"],
        "ours_vs_celery_results": headline["ours_vs_celery_results"],
        "ours_vs_django_dramatiq_admin": headline["ours_vs_django_dramatiq_admin"],
        "rss_vs_django_dramatiq": headline["rss_vs_django_dramatiq"],
        # The same pipeline with Concurrency(limit=8, key=...) over 64 keys / without flow control.
        "flow_concurrency_vs_plain": _ratio(_metric(shape.get("ours_sqlite_flow"), "runs_per_s"),
                                            _metric(shape.get("ours_sqlite"), "runs_per_s")),
        "basis": f"median throughput (runs/s), shape {primary}, ours with the default SQLite run store; "
                 "Celery = its best pool; celery_results = Celery chain + django-celery-results (threads pool); "
                 "django_dramatiq_admin = django_dramatiq + AdminMiddleware; rss_vs_django_dramatiq = our worker "
                 "process's resident memory / a django_dramatiq worker process's (same Django project)",
        "detail": {sh: {k: ratios_for(res, k) for k in ("ours_sqlite", "ours_sqlite_noinline", "ours_pg") if k in res}
                   for sh, res in results.items()},
        # Throughput with the broker's durability settings / the classic, unconfirmed default.
        "broker": {sh: {"confirms_vs_classic": _ratio(_metric(res.get("ours_sqlite_confirms"), "runs_per_s"),
                                                      _metric(res.get("ours_sqlite"), "runs_per_s")),
                        "quorum_vs_classic": _ratio(_metric(res.get("ours_sqlite_quorum"), "runs_per_s"),
                                                    _metric(res.get("ours_sqlite"), "runs_per_s"))}
                   for sh, res in results.items()},
    }
    targets = [t for k in ("ours_sqlite", "ours_pg", "ours_sqlite_flow") if k in shape for t in targets_for(shape, k)]
    scaling_result, scaling_targets = scaling(getattr(bench, "extras", None))
    targets += scaling_targets
    args = bench.args
    return {
        "schema": 1,
        "date": bench.machine.get("date"),
        "ratios": ratios,
        "targets": targets,
        "results": results,
        "scaling": scaling_result,
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
            "big_payload_bytes": BIG_PAYLOAD_BYTES,
            "truncated_by_budget": bench.truncated,
            "skipped": bench.skipped,
            "notes": bench.notes + [
                "runs/s: N runs started by one producer process as fast as it can, until N done-signals "
                "(the last stage publishes one transient message; ours: after the run is recorded done)",
                "CPU per run: CPU time of workers + producer + broker (+ PostgreSQL for that store) / N",
                "latency: emit/enqueue to done-signal received, one run in flight at a time",
                "Celery: acks on receipt (its default), no result backend, --without-gossip/mingle/heartbeat",
                "ours: settings tests.bench.settings = web.settings (run store, JSON logs + console, outbox, "
                "retries) with DEBUG off; inline chains as the engine's default (PIPELINE_INLINE_CHAINS unset), "
                "'no inline chains' with PIPELINE_INLINE_CHAINS=0",
                "like-for-like peers (first shape only): Celery chain of 3 no-op tasks, threads pool, "
                "django-celery-results (result_backend django-db, its defaults: the result stored on completion) in a "
                "SQLite file of its own (WAL), done-signal from task_postrun of the last task; django_dramatiq "
                "worker of the same Django project (tests.bench.settings_django_dramatiq), AdminMiddleware "
                "(a Task row per message: enqueued, running, done) in a SQLite file of its own, 3 actors chained "
                "with dramatiq.pipeline, done-signal after AdminMiddleware recorded the last one",
                "scaling (first shape, one figure per line; median [min-max] over the scaling rounds): chains and "
                "the 64 KiB payload are closed-loop throughput like the main table; fan-out runs go one at a time "
                "(emit -> the fan-in stage's function starting, wall clock; CPU per branch = all CPU during the "
                "fan-out runs / (runs x branches), split, join and emit included); stored runs: the same 3-stage "
                "pipeline on worker sets of their own, one store empty, one seeded with N succeeded runs "
                "(3 stage runs each) by tests/bench/seed.py",
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


def _scaling_lines(sc: dict | None) -> list[str]:
    if not sc:
        return []
    lines = ["", f"== scaling, workers {sc['shape']}: ours (SQLite); median [min-max] over {sc['rounds']} round(s) of "
                 f"{sc['seconds_per_measurement']:g}s ==",
             f"{'figure':44s} {'runs/s':>22s} {'CPU ms/run':>22s} {'CPU ms/stage':>20s}"]
    labels = {"ours_sqlite": "ours", "ours_sqlite_noinline": "ours, no inline chains"}
    for key, per in sc.get("chains", {}).items():
        for n, f in sorted(per.items(), key=lambda kv: int(kv[0])):
            lines.append(f"{(labels.get(key, key) + f', {n}-stage chain')[:44]:44s} {_spread(f['runs_per_s']):>22s} "
                         f"{_spread(f['cpu_ms_per_run'], 2):>22s} {_spread(f['cpu_ms_per_stage'], 3):>20s}")
    big = sc.get("payload_64k")
    if big:
        lines.append(f"{'ours, 3 stages, ' + str(big['payload_bytes'] // 1024) + ' KiB payload':44s} "
                     f"{_spread(big['runs_per_s']):>22s} {_spread(big['cpu_ms_per_run'], 2):>22s} "
                     f"{_spread(big['cpu_ms_per_stage'], 3):>20s}")
    stored = sc.get("stored_runs") or {}
    for label, f in ((f"ours, empty store", stored.get("empty")),
                     (f"ours, {stored.get('runs_stored', 0):,} runs stored", stored.get("stored"))):
        if f:
            lines.append(f"{label:44s} {_spread(f['runs_per_s']):>22s} {_spread(f['cpu_ms_per_run'], 2):>22s}")
    for width, f in sorted((sc.get("fan_out") or {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"fan-out {int(width):,} branches -> 1 fan-in ({f['runs']} runs, one at a time): emit->fan-in start "
                     f"{_spread(f['emit_to_fanin_start_ms'], 0)} ms, emit->done {_spread(f['emit_to_done_ms'], 0)} ms, "
                     f"{_fmt(f['cpu_ms_per_branch'], 3)} ms CPU/branch, fan-in started exactly once: "
                     f"{'yes' if f['fanin_started_exactly_once'] else 'NO'}")
    r = sc.get("ratios") or {}
    parts = [f"30/3-stage CPU per stage x{_fmt(r.get('chain30_vs_chain3_cpu_per_stage'), 2)}"]
    if r.get("chain30_vs_chain3_cpu_per_stage_noinline") is not None:
        parts.append(f"(no inline chains x{_fmt(r['chain30_vs_chain3_cpu_per_stage_noinline'], 2)})")
    if r.get("inline_vs_noinline_runs_per_s"):
        parts.append("inline/no-inline runs/s " + ", ".join(f"{n}: x{_fmt(v, 2)}" for n, v in
                                                             sorted(r["inline_vs_noinline_runs_per_s"].items(),
                                                                    key=lambda kv: int(kv[0]))))
    if r.get("payload64k_vs_chain3_cpu_per_run") is not None:
        parts.append(f"64 KiB payload CPU/run x{_fmt(r['payload64k_vs_chain3_cpu_per_run'], 2)} of the 3-stage chain's")
    if r.get("fanin_large_vs_small_cpu_per_branch") is not None:
        parts.append(f"fan-in CPU/branch large/small x{_fmt(r['fanin_large_vs_small_cpu_per_branch'], 2)}")
    if r.get("stored_vs_empty_cpu_per_run") is not None:
        parts.append(f"stored/empty CPU/run x{_fmt(r['stored_vs_empty_cpu_per_run'], 2)}")
    lines.append("  " + "; ".join(parts))
    for err in sc.get("errors", []):
        lines.append(f"  ! scaling: {err.splitlines()[0][:160]}")
    return lines


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
            if s.get("writer"):
                lines.append(_writer_line(key, s["writer"]))
        for key, s in systems.items():
            for err in s["errors"]:
                lines.append(f"  ! {key}: {err.splitlines()[0][:160]}")
    lines.extend(_scaling_lines(result.get("scaling")))
    r = result["ratios"]
    lines.append("")
    lines.append(f"ratios (throughput, higher is better for us): ours_vs_dramatiq = {_fmt(r['ours_vs_dramatiq'], 2)}, "
                 f"ours_vs_celery = {_fmt(r['ours_vs_celery'], 2)}, "
                 f"ours_vs_celery_results = {_fmt(r.get('ours_vs_celery_results'), 2)}, "
                 f"ours_vs_django_dramatiq_admin = {_fmt(r.get('ours_vs_django_dramatiq_admin'), 2)}; "
                 f"rss_vs_django_dramatiq = {_fmt(r.get('rss_vs_django_dramatiq'), 2)} (lower is better)")
    lines.append(f"  ({r['basis']})")
    for shape, b in (r.get("broker") or {}).items():
        lines.append(f"  {shape} broker settings, throughput / classic unconfirmed: publisher confirms "
                     f"x{_fmt(b['confirms_vs_classic'], 2)}, quorum queues + confirms x{_fmt(b['quorum_vs_classic'], 2)}")
    for shape, per_store in r["detail"].items():
        for store, d in per_store.items():
            lines.append(f"  {shape} {store:11s}: vs Dramatiq {_fmt(d['ours_vs_dramatiq'], 2)}, vs Dramatiq+confirms "
                         f"{_fmt(d['ours_vs_dramatiq_confirm'], 2)}, vs Celery best ({d['celery_best_pool'] or '-'}) "
                         f"{_fmt(d['ours_vs_celery'], 2)}; CPU/run x{_fmt(d['cpu_per_run_vs_dramatiq'], 2)}, "
                         f"p50 x{_fmt(d['latency_p50_vs_dramatiq'], 2)}, RSS x{_fmt(d['rss_vs_dramatiq'], 2)} of Dramatiq's"
                         + (f"; vs Celery+results {_fmt(d.get('ours_vs_celery_results'), 2)}, vs django_dramatiq+admin "
                            f"{_fmt(d.get('ours_vs_django_dramatiq_admin'), 2)}, RSS x{_fmt(d.get('rss_vs_django_dramatiq'), 2)} "
                            "of django_dramatiq's" if d.get("ours_vs_celery_results") or d.get("ours_vs_django_dramatiq_admin")
                            else ""))
    if result["targets"]:
        lines.append("")
        lines.append("targets (shape " + next(iter(result["results"]), "?") + "):")
        for t in result["targets"]:
            state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            lines.append(f"  [{state:7s}] {t['store']:11s} {t['target']:64s} ratio {_fmt(t['ratio'], 2):>6s} "
                         f"(ours {_fmt(t['ours'], 2)} vs {t['reference_system']} {_fmt(t['reference'], 2)})")
    for store, check in (result.get("run_store_check") or {}).items():
        if "task_results_by_status" in check or "tasks_by_status" in check:
            records = check.get("task_results_by_status") or check.get("tasks_by_status")
            lines.append(f"task records {store}: {records} for {check['runs_started']} runs started")
        elif "runs_by_status" in check:
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
