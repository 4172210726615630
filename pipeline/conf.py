"""The engine's settings, each with its default, read through one accessor."""
from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "PIPELINE_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "PIPELINE_LOG_DIR": "var/log",
    # Payloads are stored and carried in messages: keep them small, point at big data instead.
    "PIPELINE_MAX_PAYLOAD_BYTES": 256 * 1024,
    "PIPELINE_DEFAULT_QUEUE": "pipeline",
    "PIPELINE_DEFAULT_RETRIES": 3,
    "PIPELINE_DEFAULT_BACKOFF": (1.0, 60.0),
    "PIPELINE_DEFAULT_TIMEOUT": 300.0,
    # The relay re-publishes what was committed but not published after this long.
    "PIPELINE_RELAY_AFTER_SECONDS": 10.0,
    "PIPELINE_RELAY_INTERVAL_SECONDS": 5.0,
    # A stage enqueued but not started after this long is enqueued again (its claim stops doubles).
    "PIPELINE_STALLED_AFTER_SECONDS": 60.0,
    "PIPELINE_REDACT_KEYS": (),
    # Worker processes batch the run store's writes of all their threads into one transaction.
    "PIPELINE_GROUP_COMMIT": True,
    # A stage whose only child is ready runs that child in the same worker thread right after
    # its outcome is committed (one broker message per linear chain, not per stage).
    "PIPELINE_INLINE_CHAINS": None,  # from the environment variable of that name (see _env_flag)
    # Stage messages carry the event's payload and the parents' results up to this size
    # (JSON bytes), so a stage reads nothing it could be handed; larger ones are read from the store.
    "PIPELINE_MESSAGE_CARRY_BYTES": 8192,
}


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _env_flag(name: str, default: bool) -> bool:
    """A yes/no environment variable; anything else is refused, naming the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return _FLAGS[raw.strip().lower()]
    except KeyError:
        raise ImproperlyConfigured(f"{name}={raw!r}: use 1 or 0 (or true/false, yes/no, on/off)") from None


def get(name: str) -> Any:
    if name == "PIPELINE_INLINE_CHAINS" and not hasattr(settings, name):
        return _env_flag(name, True)
    return getattr(settings, name, DEFAULTS[name])
