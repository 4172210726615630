"""Probes and metrics for the web process.

- `GET /healthz`: the process is up and serving (liveness); touches nothing else.
- `GET /readyz`: the database (the run store) answers `SELECT 1` and the broker accepts an AMQP
  connection (readiness): 200 when both do, 503 naming what failed otherwise (an unreachable store
  says so: `"store": "unreachable"` with the error class, while emits answer 503 too). The broker's
  answer is kept for BROKER_CACHE_SECONDS per process, so probes (or anyone) calling it often do
  not open an AMQP connection each time.
- `GET /metrics`: Prometheus text format (see the `pipeline/metrics/` package for what it holds). Run and stage
  counters are counted where runs happen, in the workers: the body starts with comment lines
  saying where their endpoint is (`PIPELINE_WORKER_METRICS_PORT`, 9191 under `make run`).

None of them needs a login: expose them to the cluster, not to the internet."""
from __future__ import annotations

import threading
import time

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pipeline import bind_address, check_broker, conf, exposition, scheduler_port, store_outage, worker_port

BROKER_TIMEOUT = 2.0
BROKER_CACHE_SECONDS = 2.0
_broker_lock = threading.Lock()
_broker_result: dict[str, tuple[float, dict]] = {}  # broker URL -> (checked at, result)
_clock = time.monotonic


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:
        failed = {"ok": False, "error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__,
                  "ms": round((time.perf_counter() - started) * 1000, 1)}
        if store_outage.noticed(exc):
            failed["store"] = "unreachable"
        return failed
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        if cursor.fetchone()[0] != 1:
            raise RuntimeError("SELECT 1 did not return 1")


def _broker() -> dict:
    """The broker check's result, at most BROKER_CACHE_SECONDS old; one thread checks at a time,
    the others wait for its answer instead of opening connections of their own."""
    url = conf.get("PIPELINE_BROKER_URL")
    with _broker_lock:
        checked_at, result = _broker_result.get(url, (float("-inf"), {}))
        if _clock() - checked_at < BROKER_CACHE_SECONDS:
            return {**result, "cached": True}
        result = _timed(lambda: check_broker(url, timeout=BROKER_TIMEOUT))
        _broker_result.clear()
        _broker_result[url] = (_clock(), result)
        return result


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _timed(_database), "broker": _broker()}
    ready = all(c["ok"] for c in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    body, content_type = exposition()
    return HttpResponse(_where_run_counters_are() + body, content_type=content_type)


def _where_run_counters_are() -> bytes:
    """Comment lines (Prometheus ignores them) for a person who looks here for run counters."""
    try:
        port, scheduler = worker_port(), scheduler_port()
    except ValueError:
        port = scheduler = None
    worker = (f"http://{bind_address()}:{port}/metrics (PIPELINE_WORKER_METRICS_PORT)" if port
              else "the workers' endpoint: set PIPELINE_WORKER_METRICS_PORT on the workers")
    lines = ["# This endpoint: the web process's events emitted and the system gauges (store, outbox, queues).",
             f"# Run and stage counters (pipeline_runs_*, pipeline_stage_*) are counted by the workers: {worker}."]
    if scheduler:
        lines.append(f"# Schedule fires (pipeline_schedule_*): http://{bind_address()}:{scheduler}/metrics "
                     "(PIPELINE_SCHEDULER_METRICS_PORT).")
    return ("\n".join(lines) + "\n").encode()
