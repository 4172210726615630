"""Rebuilding one run's timeline from its log lines alone (`manage.py trace`): the lines that
`pipeline._logfiles` found about a run, event or trace id, ordered into events, runs and stage
attempts, ready to print or dump."""
from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any

RUN_END = ("run.succeeded", "run.failed", "run.cancelled")
ATTEMPT_END = ("stage.succeeded", "stage.failed", "stage.retrying", "stage.cancelled")


def _ts(line: dict[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def timeline(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Events, runs and stage attempts, with offsets from the first line, ready to print or dump."""
    if not lines:
        return {"trace_ids": [], "events": [], "runs": [], "lines": 0}
    origin = next((t for t in map(_ts, lines) if t), None)

    def offset(line: dict[str, Any]) -> float | None:
        t = _ts(line)
        try:
            return round((t - origin).total_seconds() * 1000, 3) if t and origin else None
        except OverflowError:  # timestamps millennia apart
            return None

    events: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for line in lines:
        name = line.get("event", "")
        if name == "event.emitted":
            events[line.get("event_id")] = {
                "event_id": line.get("event_id"), "type": line.get("event_type"), "at_ms": offset(line),
                "timestamp": line.get("timestamp"), "process": line.get("process"), "pid": line.get("pid"),
                "host": line.get("host"), "runs_started": line.get("runs_started"),
            }
        run_id = line.get("run_id")
        if not run_id or not (name.startswith("stage.") or name.startswith("run.")):
            continue
        run = runs.setdefault(run_id, {"run_id": run_id, "pipeline": line.get("pipeline"), "event_id": line.get("event_id"),
                                       "status": "running", "attempts": [], "_open": {}})
        run["pipeline"] = run["pipeline"] or line.get("pipeline")
        if name == "run.started":
            run["started_ms"] = offset(line)
        elif name in RUN_END or name == "run.replayed":
            run["status"] = name.split(".", 1)[1]
            run["finished_ms"] = offset(line)
            if line.get("duration_ms") is not None:
                run["duration_ms"] = line["duration_ms"]
            if line.get("error"):
                run["error"] = line["error"]
        elif name == "stage.started":
            attempt = {"stage": line.get("stage"), "attempt": line.get("attempt"), "start_ms": offset(line),
                       "outcome": "running", "pid": line.get("pid"), "host": line.get("host"),
                       "message_id": line.get("message_id")}
            run["attempts"].append(attempt)
            run["_open"][(line.get("stage"), line.get("attempt"))] = attempt
        elif name in ATTEMPT_END:
            attempt = run["_open"].pop((line.get("stage"), line.get("attempt")), None)
            if attempt is None:
                attempt = {"stage": line.get("stage"), "attempt": line.get("attempt"), "start_ms": offset(line),
                           "pid": line.get("pid"), "host": line.get("host")}
                run["attempts"].append(attempt)
            attempt["outcome"] = name.split(".", 1)[1]
            for key in ("duration_ms", "retry_in_ms", "error_type", "error", "reason"):
                if line.get(key) is not None:
                    attempt[key] = line[key]
    for run in runs.values():
        run.pop("_open")
    trace_ids = sorted({l["trace_id"] for l in lines if isinstance(l.get("trace_id"), str)})
    return {"trace_ids": trace_ids, "events": list(events.values()), "runs": list(runs.values()), "lines": len(lines)}


def render(data: dict[str, Any], width: int = 30) -> str:
    """An indented tree with a waterfall bar per stage attempt."""
    out = io.StringIO()
    out.write(f"trace {', '.join(data['trace_ids']) or '?'}  ({data['lines']} log lines)\n")
    for event in data["events"]:
        out.write(f"event {event['type']} {event['event_id']}  at {event['timestamp']}  "
                  f"{event['process']} pid {event['pid']}@{event['host']}  runs started: {event['runs_started']}\n")
    ends = [a["start_ms"] + (a.get("duration_ms") or 0) for r in data["runs"] for a in r["attempts"]
            if a.get("start_ms") is not None]
    span = max(ends + [r.get("finished_ms") or 0 for r in data["runs"]] + [1.0])
    for run in data["runs"]:
        took = f" in {run['duration_ms']:.0f} ms" if run.get("duration_ms") is not None else ""
        out.write(f"└─ run {run['run_id']} {run['pipeline']}  {run['status']}{took}\n")
        for i, a in enumerate(run["attempts"]):
            branch = "└─" if i == len(run["attempts"]) - 1 else "├─"
            start = a.get("start_ms") or 0.0
            duration = a.get("duration_ms") or 0.0
            lead = min(max(0, int(start / span * width)), width)  # clamped: odd offsets never cost memory
            bar = " " * lead + "█" * min(max(1, int(duration / span * width)), width)
            detail = a["outcome"]
            if a.get("retry_in_ms") is not None:
                detail += f", retry in {a['retry_in_ms']} ms"
            if a.get("error"):
                detail += f": {a['error']}"
            out.write(f"   {branch} +{start / 1000:7.3f}s {a['stage']:<20} #{a['attempt']} "
                      f"{duration:9.1f} ms  {bar:<{width}}  {a.get('pid')}@{a.get('host')}  {detail}\n")
    return out.getvalue()


def finished(data: dict[str, Any]) -> bool:
    return bool(data["runs"]) and all(r["status"] in ("succeeded", "failed", "cancelled") for r in data["runs"])
