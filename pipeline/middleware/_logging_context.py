"""Binds a message's run ids to every log line written while a worker handles it."""
from __future__ import annotations

from typing import Any

import structlog
from dramatiq.middleware import Middleware

_CARRIED = ("trace_id", "event_id", "run_id", "pipeline")


class LoggingContext(Middleware):
    """Binds trace/event/run ids (carried in message options), the stage and the Dramatiq message
    id before the actor runs, and clears them after, so no id leaks into the next message."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.clear_contextvars()
        options = message.options
        context = {key: options[key] for key in _CARRIED if key in options}
        if "pipeline" in context:
            context["stage"] = message.actor_name.split(".", 1)[-1]
        else:
            context["actor"] = message.actor_name
        structlog.contextvars.bind_contextvars(message_id=message.message_id, **context)

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.clear_contextvars()
