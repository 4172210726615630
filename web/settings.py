"""Settings for the demo project; every knob that differs between machines comes from the environment."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from pipeline import create_private
from pipeline.project import DRAMATIQ_MIDDLEWARE, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PIPELINE_VAR_DIR", BASE_DIR / "var"))
# What we keep in var/ is created owner-only (pipeline/_files.py: the database, logs, secrets, lock
# and metrics folders); var/ itself keeps the default mode, since infra/postgres.sh, run as root,
# hands the `postgres` user a cluster folder inside it, which that user must be able to reach.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# `production` (the Dockerfile, compose, Kubernetes and systemd files set it): the key must come
# from the environment, cookies are HTTPS-only, HSTS, HTTPS behind a TLS proxy; see "Production".
DJANGO_ENV = os.environ.get("DJANGO_ENV", "development").strip().lower()
if DJANGO_ENV not in ("development", "production"):
    raise ImproperlyConfigured(f"DJANGO_ENV={os.environ['DJANGO_ENV']!r}: use development or production")
PRODUCTION = DJANGO_ENV == "production"
_YES_NO = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _env_flag(name: str, default: bool) -> bool:
    """A yes/no environment variable; anything else stops the process at start, naming it."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return _YES_NO[raw.strip().lower()]
    except KeyError:
        raise ImproperlyConfigured(f"{name}={raw!r}: use 1 or 0 (or true/false, yes/no, on/off)") from None


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    """A whole-number environment variable of at least `minimum`; anything else stops the process at start."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r}: use a whole number of at least {minimum}")
    return int(raw)


def _production_secret_key(value: str) -> str:
    """The key of a production process: from DJANGO_SECRET_KEY, long, not a placeholder."""
    generate = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    if not value:
        raise ImproperlyConfigured(f"DJANGO_SECRET_KEY is required with DJANGO_ENV=production; make one with {generate}")
    if len(value) < 50 or len(set(value)) < 5 or "change-me" in value or value.startswith("django-insecure-"):
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is a placeholder or too weak (50+ random characters needed); make one with {generate}")
    return value


def _secret_key() -> str:
    """A stable development key kept under var/, so sessions survive restarts without a committed secret."""
    if PRODUCTION:
        return _production_secret_key(os.environ.get("DJANGO_SECRET_KEY", "").strip())
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    path = VAR_DIR / "secret-key"
    create_private(path, secrets.token_urlsafe(50))  # 0600 from the start; a racing process reads the same key
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Off unless asked for (`make run` asks, for its web process): DEBUG keeps every SQL query in
# memory and costs the workers about a quarter of their CPU.
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # `pipeline` comes before `django_dramatiq` so its `rundramatiq` (a broker pre-flight check
    # in front of django-dramatiq's) is the one Django runs.
    "pipeline",
    "django_dramatiq",
    "schedules",
    "web.api",
    "web.shop",
    "web.webhooks",
    "web.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "web.api.middleware.JsonErrorsMiddleware",  # every error under /api/ is JSON (404, 405, 403 included)
    "whitenoise.middleware.WhiteNoiseMiddleware",  # the dashboard's CSS/JS with DEBUG off too
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "pipeline.request_context.RequestContextMiddleware",
    "web.unavailable.StoreUnavailableMiddleware",  # 503 + JSON while the database is unreachable
]

ROOT_URLCONF = "web.urls"
WSGI_APPLICATION = "web.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database(url: str) -> dict:
    config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # The same WAL, IMMEDIATE and busy-timeout set-up a user's project gets (sqlite_database).
        # Kept open across messages (reconnecting and re-running the PRAGMAs cost a worker a
        # fifth of its CPU); Django closes a connection that fails its health check.
        shared = sqlite_database(config["NAME"])
        config["CONN_MAX_AGE"] = shared["CONN_MAX_AGE"]
        config["OPTIONS"] = shared["OPTIONS"]
        config["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    return config


DATABASES = {"default": _database(os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Served from the apps' static folders directly, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
LOGIN_URL = "/admin/login/"

PIPELINE_BROKER_URL = os.environ.get("PIPELINE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PIPELINE_LOG_DIR = os.environ.get("PIPELINE_LOG_DIR", str(VAR_DIR / "log"))
# The workers' multiprocess metrics folders (PIPELINE_WORKER_METRICS_PORT): under var/ like the rest.
PIPELINE_METRICS_DIR = os.environ.get("PIPELINE_METRICS_DIR") or str(VAR_DIR / "prometheus")

DRAMATIQ_BROKER = {
    # Dramatiq's RabbitMQ broker, declaring quorum or classic queues (PIPELINE_QUEUE_TYPE), with or
    # without publisher confirms (PIPELINE_PUBLISH_CONFIRMS), on the first reachable node of
    # PIPELINE_BROKER_URL (one URL, or several separated by commas or spaces): see pipeline/rabbitmq.py.
    # Each URL gets heartbeat=30 and blocked_connection_timeout=30 unless it sets its own: heartbeats
    # let RabbitMQ notice a dead worker host and redeliver its unacked stages.
    "BROKER": "pipeline.rabbitmq.PipelineBroker",
    "OPTIONS": {"url": PIPELINE_BROKER_URL},
    # The engine's list, stated in full there (pipeline.project.DRAMATIQ_MIDDLEWARE): django-dramatiq's
    # default leaves out Pipelines and ShutdownNotifications, and order matters.
    "MIDDLEWARE": list(DRAMATIQ_MIDDLEWARE),
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks", "pipelines"]

# Django calls this with LOGGING during django.setup(): one structlog set-up for every process.
LOGGING_CONFIG = "pipeline.logging.configure_from_django"
LOGGING = {"log_dir": PIPELINE_LOG_DIR, "level": os.environ.get("PIPELINE_LOG_LEVEL", "INFO")}

# Demo shop: the fraction of `charge_payment` attempts that fail, to show retries.
SHOP_FAILURE_RATE = float(os.environ.get("SHOP_FAILURE_RATE", "0.2"))
# Demo shop: an order of exactly this total always fails its payment (like a payment sandbox's
# test amounts), to show a failed order's ending on demand; 0 turns it off.
SHOP_FAILING_TOTAL_CENTS = int(os.environ.get("SHOP_FAILING_TOTAL_CENTS", "99999"))
# Fulfilments in progress per customer at a time (flow control: Concurrency on fulfil_order); 0: no limit.
SHOP_FULFILMENTS_PER_CUSTOMER = int(os.environ.get("SHOP_FULFILMENTS_PER_CUSTOMER", "1"))

# Webhooks go to public addresses only; development and tests whose receivers run on this
# machine (or a private network) turn that off. Never in production.
PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS = _env_flag("PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
if PRODUCTION and PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS:
    raise ImproperlyConfigured("PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS is for development; unset it with DJANGO_ENV=production")
# API tokens made from now on expire after this many days (the admin can set another date).
PIPELINE_API_TOKEN_DAYS = _env_int("PIPELINE_API_TOKEN_DAYS", 90, minimum=1)

# --- Production: HTTPS behind a TLS-terminating proxy (an ingress, a load balancer, nginx) ----
if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("DJANGO_DEBUG=1 with DJANGO_ENV=production would show tracebacks to anyone")
    # The proxy says the request came over HTTPS; it must set (overwrite) this header on every
    # request, or a client could claim HTTPS itself. Empty: no proxy header is trusted.
    _proxy_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto").strip()
    if _proxy_header:
        SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
    SECURE_SSL_REDIRECT = _env_flag("DJANGO_SECURE_SSL_REDIRECT", True)
    # Probes and scrapes come over plain HTTP from inside the cluster: not redirected.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SECURE_HSTS_SECONDS = _env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_flag("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_flag("DJANGO_SECURE_HSTS_PRELOAD", True)
    # The dashboard's and the admin's forms post back to the site they came from; list the
    # origins when the proxy changes the Host header (default: https:// + each allowed host).
    CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()] or [
        "https://" + ("*" + h if h.startswith(".") else h) for h in ALLOWED_HOSTS if h and h != "*"
    ]

