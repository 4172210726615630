"""The metrics counted from log lines, and `observe`, the structlog processor that counts them.

Every run and stage transition is already one structured log line; `observe` sits in the engine's
native chain (`pipeline.logging`) and updates counters and histograms from those event dicts."""
from __future__ import annotations

import threading
from typing import Any, Callable

from prometheus_client import Counter, Histogram

from .._definitions import registry

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
FIRE_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_lock = threading.Lock()
_metrics: "_Metrics | None" = None


class _Metrics:
    # Made on first use, not at import: in multiprocess mode a metric must be made after
    # PROMETHEUS_MULTIPROC_DIR is set (`pipeline.middleware.WorkerMetrics`).
    def __init__(self) -> None:
        self.runs_started = Counter(
            "pipeline_runs_started_total", "Runs that started (their first stage began).", ["pipeline"])
        self.runs_finished = Counter(
            "pipeline_runs_finished_total", "Runs that ended, by outcome (succeeded, failed, cancelled).",
            ["pipeline", "outcome"])
        self.run_duration = Histogram(
            "pipeline_run_duration_seconds", "From a run's start to its end.", ["pipeline", "outcome"],
            buckets=RUN_BUCKETS)
        self.stage_duration = Histogram(
            "pipeline_stage_duration_seconds",
            "Time in the stage's function, per attempt, by outcome (succeeded, retrying, failed).",
            ["pipeline", "stage", "outcome"], buckets=STAGE_BUCKETS)
        self.stage_retries = Counter(
            "pipeline_stage_retries_total", "Stage attempts that failed and were scheduled again.",
            ["pipeline", "stage"])
        self.events_emitted = Counter(
            "pipeline_events_emitted_total", "Events accepted by emit (stored in the outbox).", ["type"])
        self.schedule_fires = Counter(
            "pipeline_schedule_fires_total", "Schedule fires that started a run, by reason.", ["schedule", "reason"])
        self.fire_delay = Histogram(
            "pipeline_schedule_fire_delay_seconds",
            "How late a scheduled fire started its run, after its nominal fire time (on-time fires only).",
            ["schedule"], buckets=FIRE_DELAY_BUCKETS)


def metric_families() -> list[Any]:
    """Every metric of ours, for `exposition` to describe those without a sample yet."""
    return list(vars(_get()).values())


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


_children: dict[tuple, Any] = {}
_RUN_OUTCOMES = ("succeeded", "failed", "cancelled")


def prime() -> _Metrics:
    """The metrics, with a zero sample for every pipeline, outcome, stage and event type declared
    in code: an endpoint shows real zeros from its first scrape, not an empty page (in a worker's
    multiprocess mode a family appears only once a sample of it is written), and `rate()` sees a
    counter's first increment. Histograms are not primed (a page of empty buckets per stage and
    outcome); their HELP and TYPE still show (`_EveryFamily`)."""
    m = _get()
    for pipeline in list(registry.pipelines.values()):
        _child(m.runs_started, pipeline.name)
        for outcome in _RUN_OUTCOMES:
            _child(m.runs_finished, pipeline.name, outcome)
        for stage in pipeline.stages:
            _child(m.stage_retries, pipeline.name, stage)
        _child(m.events_emitted, pipeline.event_type)
    return m


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: prometheus_client validates and locks on every call
    (about 1 µs), and this runs on every transition line. Label sets are few (pipelines x stages)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def _seconds(event: dict, key: str = "duration_ms") -> float | None:
    value = event.get(key)
    return float(value) / 1000 if isinstance(value, (int, float)) else None


def _label(event: dict, key: str) -> str:
    return str(event.get(key) or "unknown")


def _run_started(m: _Metrics, e: dict) -> None:
    _child(m.runs_started, _label(e, "pipeline")).inc()


def _run_finished(outcome: str) -> Callable[[_Metrics, dict], None]:
    def handle(m: _Metrics, e: dict) -> None:
        pipeline = _label(e, "pipeline")
        _child(m.runs_finished, pipeline, outcome).inc()
        seconds = _seconds(e)
        if seconds is not None:
            _child(m.run_duration, pipeline, outcome).observe(seconds)

    return handle


def _stage_finished(outcome: str) -> Callable[[_Metrics, dict], None]:
    def handle(m: _Metrics, e: dict) -> None:
        seconds = _seconds(e)
        if seconds is None:  # e.g. `stage.failed` of a cancelled run: no attempt behind it
            return
        pipeline, stage = _label(e, "pipeline"), _label(e, "stage")
        _child(m.stage_duration, pipeline, stage, outcome).observe(seconds)
        if outcome == "retrying":
            _child(m.stage_retries, pipeline, stage).inc()

    return handle


def _event_emitted(m: _Metrics, e: dict) -> None:
    _child(m.events_emitted, _label(e, "event_type")).inc()


def _schedule_fired(m: _Metrics, e: dict) -> None:
    schedule, reason = _label(e, "schedule_id"), _label(e, "reason")
    _child(m.schedule_fires, schedule, reason).inc()
    seconds = _seconds(e, "fire_delay_ms")
    # Catch-up, buffered, manual and backfill fires are late on purpose: they would drown the signal.
    if seconds is not None and reason == "schedule":
        _child(m.fire_delay, schedule).observe(max(0.0, seconds))


_HANDLERS: dict[str, Callable[[_Metrics, dict], None]] = {
    "run.started": _run_started,
    "run.succeeded": _run_finished("succeeded"),
    "run.failed": _run_finished("failed"),
    "run.cancelled": _run_finished("cancelled"),
    "stage.succeeded": _stage_finished("succeeded"),
    "stage.retrying": _stage_finished("retrying"),
    "stage.failed": _stage_finished("failed"),
    "event.emitted": _event_emitted,
    "schedule.fired": _schedule_fired,
}


def observe(_logger: Any, _method: str, event_dict: dict) -> dict:
    """structlog processor: counts the transitions that log lines announce; never raises. One dict
    lookup per line. It sits in our native chain only (pipeline/logging.py), never in the chain of
    third-party stdlib records, so a library line that happens to say `run.started` is not counted."""
    event = event_dict.get("event")
    handler = _HANDLERS.get(event) if type(event) is str else None
    if handler is not None:
        try:
            handler(_get(), event_dict)
        except Exception:  # pragma: no cover - metrics must never break logging
            pass
    return event_dict
