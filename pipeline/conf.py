"""Every `PIPELINE_*` setting in one table, with its default, where it is read from and what it
means, read through one accessor: `conf.get("PIPELINE_…")`.

Three sources, one per setting:

- `setting`: a Django setting (`web/settings.py` fills the project's from the environment);
- `environment`: the process's environment only, for what is needed before (or without) Django:
  the log set-up, the metrics endpoints (a worker's exposition process has no Django), the folders;
- `setting, environment`: the Django setting when it is set, else the environment variable.

An unset value (missing, None or empty) means the default. The README's settings table shows the
same names and defaults (`tests/test_settings_table.py` checks the two agree)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _text(raw: str) -> str:
    return raw


def _flag(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        """A yes/no environment variable; anything else is refused, naming the variable."""
        try:
            return _FLAGS[raw.strip().lower()]
        except KeyError:
            raise ImproperlyConfigured(f"{name}={raw!r}: use 1 or 0 (or true/false, yes/no, on/off)") from None
    return parse


def _port(raw: str) -> int | None:
    value = raw.strip()
    return int(value) if value and value != "0" else None


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    shown: str  # the default as the README's table shows it
    doc: str
    source: str = "setting"
    parse: Callable[[str], Any] = _text  # an environment variable's text into the value


SETTINGS: tuple[Setting, ...] = (
    # The broker and the run store
    Setting("PIPELINE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:guest@127.0.0.1:5672/%2F",
            "an existing broker instead of the local node"),
    Setting("PIPELINE_GROUP_COMMIT", True, "True",
            "worker processes batch the run store's writes of all their threads into one transaction"),
    Setting("PIPELINE_QUEUE_TYPE", "classic", "classic",
            "`quorum`: every queue the engine declares is a quorum queue (a RabbitMQ cluster); anything else "
            "stops the process at start", source="setting, environment"),
    Setting("PIPELINE_PUBLISH_CONFIRMS", None, "quorum",
            "stage messages confirmed by the broker before the publishing stage is acknowledged; default: on "
            "with `quorum` queues, off with classic ones", source="setting, environment"),
    Setting("PIPELINE_DELIVERY_LIMIT", 20, "20",
            "quorum queues: deliveries of one message before it is dead-lettered", source="setting, environment"),
    Setting("PIPELINE_MAX_HELD_DELAY_SECONDS", 900, "900",
            "longer retry delays are re-published in hops (keep it below RabbitMQ's `consumer_timeout`)",
            source="setting, environment"),
    # Events and messages
    Setting("PIPELINE_MAX_PAYLOAD_BYTES", 256 * 1024, "262144",
            "payloads are stored and carried in messages: a larger one is refused (point at big data instead)"),
    Setting("PIPELINE_MESSAGE_CARRY_BYTES", 8192, "8192",
            "stage messages carry the event's payload and the parents' results up to this size (JSON bytes); "
            "larger ones are read from the store"),
    Setting("PIPELINE_INLINE_CHAINS", True, "1",
            "`0`: publish every stage as a message of its own instead of continuing linear chains in the same "
            "worker (`1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`; anything else stops the process at start, "
            "naming the variable)",
            source="setting, environment", parse=_flag("PIPELINE_INLINE_CHAINS")),
    # Stage defaults (a stage's own arguments win)
    Setting("PIPELINE_DEFAULT_QUEUE", "pipeline", "pipeline", "the queue of a pipeline that names none"),
    Setting("PIPELINE_DEFAULT_RETRIES", 3, "3", "retries of a stage that names none"),
    Setting("PIPELINE_DEFAULT_BACKOFF", (1.0, 60.0), "(1.0, 60.0)",
            "(first, longest) wait in seconds between a stage's retries"),
    Setting("PIPELINE_DEFAULT_TIMEOUT", 300.0, "300.0", "seconds a stage attempt may run"),
    # The relay (outbox)
    Setting("PIPELINE_RELAY_AFTER_SECONDS", 10.0, "10.0",
            "the relay re-publishes what was committed but not published after this long"),
    Setting("PIPELINE_RELAY_INTERVAL_SECONDS", 5.0, "5.0", "how often the relay (and the scheduler's) looks"),
    Setting("PIPELINE_STALLED_AFTER_SECONDS", 60.0, "60.0",
            "a stage enqueued but not started after this long is enqueued again (its claim stops doubles)"),
    # Workers
    Setting("PIPELINE_HEARTBEAT_SECONDS", 5.0, "5.0", "how often each worker process writes its heartbeat"),
    Setting("PIPELINE_WORKER_OFFLINE_AFTER_SECONDS", 20.0, "20.0",
            "the dashboard shows a worker silent for longer as offline"),
    # Logs and traces
    Setting("PIPELINE_LOG_DIR", "var/log", "var/log",
            "JSON lines, one file per process kind (`web.jsonl`, `worker.jsonl`, `scheduler.jsonl`, …); "
            "the log set-up, before Django, reads the environment variable"),
    Setting("PIPELINE_LOG_FORMAT", "auto", "auto",
            "console output on stderr: `console` (for people), `json`, `none` (the file only), or `auto` "
            "(console on a TTY, else json)", source="environment"),
    Setting("PIPELINE_LOG_LEVEL", "INFO", "INFO", "lines below it are not written (and cost next to nothing)",
            source="environment"),
    Setting("PIPELINE_PROCESS", "", "",
            "the process kind that names its log file (default: from the command: web, worker, scheduler, …)",
            source="environment"),
    Setting("PIPELINE_REDACT_KEYS", (), "()", "more keys whose values are masked in logs and the dashboard"),
    Setting("PIPELINE_TRUSTED_TRACEPARENT", "authenticated", "authenticated",
            "where a request's `traceparent` is trusted: `authenticated`, `all`, `none` (anything else stops "
            "the process at start)", source="setting, environment"),
    # Folders
    Setting("PIPELINE_VAR_DIR", "", "var",
            "what the processes keep (database, logs, keys, metrics folders); default: `var/` in the working directory",
            source="environment"),
    # Metrics
    Setting("PIPELINE_WORKER_METRICS_PORT", None, "",
            "the workers' `/metrics` port (run and stage counters); unset: no endpoint",
            source="environment", parse=_port),
    Setting("PIPELINE_SCHEDULER_METRICS_PORT", None, "",
            "the scheduler's `/metrics` port (schedule fires); unset: no endpoint", source="environment", parse=_port),
    Setting("PIPELINE_METRICS_ADDR", "127.0.0.1", "127.0.0.1",
            "the address those two endpoints bind (containers need 0.0.0.0)", source="environment"),
    Setting("PIPELINE_METRICS_DIR", "", "",
            "the workers' multiprocess metrics folders (default: `<PIPELINE_VAR_DIR>/prometheus`)",
            source="environment"),
    # The web project's apps
    Setting("PIPELINE_API_TOKEN_DAYS", 90, "90", "an API token expires this many days after it is made"),
    Setting("PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS", False, "False",
            "webhooks may target loopback and private addresses (development only)"),
    Setting("PIPELINE_SSE_MAX_STREAMS", 32, "32",
            "open event streams per web process; beyond: 503 (gunicorn: half its threads)",
            source="setting, environment"),
    Setting("PIPELINE_SSE_MAX_STREAMS_PER_CLIENT", 4, "4",
            "open event streams per client (API token, else address) per web process; beyond: 429",
            source="setting, environment"),
)

TABLE: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
DEFAULTS: dict[str, Any] = {setting.name: setting.default for setting in SETTINGS}


def _unset(value: Any) -> bool:
    return value is None or value == ""


def environment(name: str) -> Any:
    """The setting from the process's environment (parsed), else its default; never reads Django's
    settings, so it works before they are configured."""
    raw = os.environ.get(name)
    return TABLE[name].default if _unset(raw) else TABLE[name].parse(raw)


def get(name: str) -> Any:
    """The setting's value from its source (see the module's doc), else its default."""
    setting = TABLE[name]
    if setting.source == "environment":
        return environment(name)
    value = getattr(settings, name, None)
    if not _unset(value):
        return value
    if setting.source == "setting, environment":
        return environment(name)
    return setting.default
