"""The done-signal of the django_dramatiq system: after the last actor's message was processed
and AdminMiddleware recorded its Task as done (this middleware is listed before AdminMiddleware:
Dramatiq calls `after_*` hooks in reverse order)."""
from __future__ import annotations

from typing import Any

from dramatiq.middleware import Middleware

from tests.bench.done import signal_done

LAST_ACTOR = "bench_dj_stage3"  # tasks.LAST_ACTOR; not imported: middleware is built before actors


class DoneSignal(Middleware):
    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is None and message.actor_name == LAST_ACTOR:
            signal_done()
