"""What a Django project adds to its settings to run the engine, the scheduler, the JSON API, the
dashboard and the webhooks: one call, so that nobody copies (and then drifts from) a list whose
order matters.

    # settings.py
    from pipeline.project import pipeline_settings

    globals().update(pipeline_settings(INSTALLED_APPS, MIDDLEWARE, broker_url="amqp://…"))

and, in urls.py, `path("pipelines/", include("web.routes"))`. The docs' "Getting started" page
shows the settings this returns; `tests/test_packaging.py` checks that this repository's own
project (`web/settings.py`) uses the same apps, middleware and Dramatiq set-up."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from django.core.exceptions import ImproperlyConfigured

from . import conf

# `pipeline` before `django_dramatiq`: its `rundramatiq` (a broker pre-flight check in front of
# django-dramatiq's) is the one Django runs.
APPS: tuple[str, ...] = ("pipeline", "django_dramatiq", "schedules", "web.api", "web.webhooks", "web.dashboard")
# The dashboard logs in through the admin, and its pages use sessions, messages and static files.
NEEDED_APPS: tuple[str, ...] = (
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "django.contrib.messages", "django.contrib.staticfiles",
)

JSON_ERRORS = "web.api.middleware.JsonErrorsMiddleware"  # every error under the API's prefix is JSON
REQUEST_CONTEXT = "pipeline.request_context.RequestContextMiddleware"  # a request's trace id in its log lines
STORE_UNAVAILABLE = "web.unavailable.StoreUnavailableMiddleware"  # 503 + JSON while the database is unreachable

# Stated in full on purpose: django-dramatiq's default list leaves out Pipelines and
# ShutdownNotifications, and order matters (logging context is bound before anything logs).
DRAMATIQ_MIDDLEWARE: tuple[str, ...] = (
    "pipeline.middleware.LoggingContext",
    "pipeline.middleware.LongDelays",  # delays past PIPELINE_MAX_HELD_DELAY_SECONDS go in hops
    "pipeline.middleware.UrgentQueues",  # `--queues q` consumes q.urgent too (pipeline.flow._priority)
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.ShutdownNotifications",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Pipelines",
    "dramatiq.middleware.Retries",
    "dramatiq.middleware.CurrentMessage",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "pipeline.middleware.Heartbeat",
    "pipeline.middleware.Drain",  # worker.draining / worker.drained lines on SIGTERM
    "pipeline.middleware.WorkerMetrics",  # PIPELINE_WORKER_METRICS_PORT: one /metrics per rundramatiq
)


def _after(items: list[str], anchor: str, item: str) -> None:
    """Inserts `item` right after `anchor` (at the end when the project has no `anchor`)."""
    if item in items:
        return
    items.insert(items.index(anchor) + 1 if anchor in items else len(items), item)


def pipeline_settings(
    installed_apps: Sequence[str], middleware: Sequence[str], *, broker_url: str | None = None,
    log_dir: str | Path | None = None, log_level: str | None = None,
) -> dict[str, Any]:
    """The settings to add to a project: its own `installed_apps` and `middleware` with ours in
    the right places, and Dramatiq's broker, autodiscovery and the log set-up. `broker_url`,
    `log_dir` and `log_level` default to the environment's PIPELINE_BROKER_URL, PIPELINE_LOG_DIR and
    PIPELINE_LOG_LEVEL, else to their defaults (a local RabbitMQ, `var/log`, `INFO`). Raises ImproperlyConfigured naming any Django app the
    dashboard needs that the project lacks."""
    missing = [app for app in NEEDED_APPS if app not in installed_apps]
    if missing:
        raise ImproperlyConfigured(f"django-pipelines needs these apps in INSTALLED_APPS too: {', '.join(missing)}")
    apps = [*installed_apps, *(app for app in APPS if app not in installed_apps)]
    stack = list(middleware)
    _after(stack, "django.middleware.security.SecurityMiddleware", JSON_ERRORS)
    if JSON_ERRORS not in middleware and stack[-1] == JSON_ERRORS:  # no SecurityMiddleware: first
        stack.insert(0, stack.pop())
    stack += [item for item in (REQUEST_CONTEXT, STORE_UNAVAILABLE) if item not in stack]  # after auth: last
    broker_url = broker_url or conf.environment("PIPELINE_BROKER_URL")
    log_dir = str(log_dir or conf.environment("PIPELINE_LOG_DIR"))
    log_level = log_level or conf.environment("PIPELINE_LOG_LEVEL")
    return {
        "INSTALLED_APPS": apps,
        "MIDDLEWARE": stack,
        "PIPELINE_BROKER_URL": broker_url,
        "PIPELINE_LOG_DIR": log_dir,
        "DRAMATIQ_BROKER": {
            # Dramatiq's RabbitMQ broker, declaring quorum or classic queues (PIPELINE_QUEUE_TYPE),
            # on the first reachable node of broker_url (one URL, or several separated by commas).
            "BROKER": "pipeline.rabbitmq.PipelineBroker",
            "OPTIONS": {"url": broker_url},
            "MIDDLEWARE": list(DRAMATIQ_MIDDLEWARE),
        },
        "DRAMATIQ_AUTODISCOVER_MODULES": ["tasks", "pipelines"],
        # Django calls this with LOGGING during django.setup(): one structlog set-up for every process.
        "LOGGING_CONFIG": "pipeline.logging.configure_from_django",
        "LOGGING": {"log_dir": log_dir, "level": log_level},
    }


def sqlite_database(path: str | Path) -> dict[str, Any]:
    """A DATABASES entry for SQLite that several worker processes and threads can write at once:
    WAL (readers go on while one writes), IMMEDIATE transactions (the write lock at BEGIN, no
    deadlock on upgrade) and a busy timeout (writers queue instead of failing with "database is
    locked"). PostgreSQL needs nothing of the kind."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "CONN_MAX_AGE": 600,
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        },
    }
