"""gunicorn configuration for the web process: `gunicorn -c infra/gunicorn.conf.py`.

Every value can be changed from the environment (GUNICORN_*), so the same file serves compose,
Kubernetes and systemd. Threads, not processes, carry most of the concurrency: a request mostly
waits on the database or the broker (see infra/README.md, "Sizing").

Metrics: each gunicorn worker is a process of its own, so the counters of `/metrics` are kept in
prometheus_client's multiprocess mode, in a directory made fresh when gunicorn starts
(`PROMETHEUS_MULTIPROC_DIR`, default `<PIPELINE_VAR_DIR or var>/prometheus/web-<master pid>`);
any worker answering `/metrics` reports the sum of all of them."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


wsgi_app = "web.wsgi:application"
chdir = str(_ROOT)
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",")
worker_class = "gthread"
workers = _int("GUNICORN_WORKERS", max(2, os.cpu_count() or 1))
threads = _int("GUNICORN_THREADS", 8)
# Server-sent event streams (`/shop/orders/<token>/events`, `/api/runs/<id>/events`) each hold a
# thread while open: a worker keeps at most half its threads for them (4 per client), and answers
# further ones 429 / 503 with Retry-After (web/api/stream_limits.py), so ordinary requests and the
# probes always find a free thread. Set either variable to change it (applied through raw_env below).
_sse_max_streams = os.environ.get("PIPELINE_SSE_MAX_STREAMS", str(max(1, threads // 2)))
_sse_max_streams_per_client = os.environ.get("PIPELINE_SSE_MAX_STREAMS_PER_CLIENT", str(min(4, max(1, threads // 2))))
# A worker silent for longer than this is killed and restarted. gthread workers report from their
# main loop, so an open event stream (which writes at least every 15 s) does not count against it.
timeout = _int("GUNICORN_TIMEOUT", 30)
# SIGTERM: stop accepting, finish requests in flight for up to this long (keep it under the
# orchestrator's own grace period: terminationGracePeriodSeconds, TimeoutStopSec, stop_grace_period).
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 25)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then, so a slow leak never becomes an outage.
max_requests = _int("GUNICORN_MAX_REQUESTS", 5000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 500)
# Behind a proxy or an ingress: trust its X-Forwarded-* headers (comma-separated addresses).
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Application logs are the JSON lines of pipeline.logging; gunicorn's own go to stderr.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
proc_name = "django-pipelines-web"
preload_app = False  # each worker imports the app after PROMETHEUS_MULTIPROC_DIR is set

raw_env = [f"PIPELINE_PROCESS={os.environ.get('PIPELINE_PROCESS', 'web')}",
           f"PIPELINE_SSE_MAX_STREAMS={_sse_max_streams}",
           f"PIPELINE_SSE_MAX_STREAMS_PER_CLIENT={_sse_max_streams_per_client}"]


def _multiproc_dir() -> Path:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    var = Path(os.environ.get("PIPELINE_VAR_DIR") or _ROOT / "var")
    return var / "prometheus" / f"web-{os.getpid()}"


def on_starting(server) -> None:
    """In the master, before any worker: a fresh multiprocess directory for this gunicorn."""
    path = _multiproc_dir()
    shutil.rmtree(path, ignore_errors=True)
    old_umask = os.umask(0o077)  # owner-only folders, like everything under var/ (the master has one thread here)
    try:
        path.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(old_umask)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # Imported here, once the directory is in the environment (prometheus_client picks its value
    # class when imported), and not in child_exit: that runs in gunicorn's SIGCHLD handler, where an
    # import that a second SIGCHLD interrupts (workers exiting together at shutdown, a slow import on
    # a loaded machine) re-enters itself and fails the master's exit.
    global _multiprocess
    from prometheus_client import multiprocess as _multiprocess


_multiprocess = None


def child_exit(server, worker) -> None:
    """A worker exited (recycled or crashed): its live gauges no longer count; counters stay."""
    if _multiprocess is not None:
        _multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    shutil.rmtree(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""), ignore_errors=True)
