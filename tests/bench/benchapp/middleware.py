"""Sends the bench done-signal after the last stage's message was processed, that is after the
engine committed the stage's success and the run's (not from inside the stage function, which
returns before the run is recorded done)."""
from __future__ import annotations

from typing import Any

from dramatiq.middleware import Middleware

from tests.bench.done import signal_done

# Not imported from .pipelines: middleware is built while the broker is being set up, before
# actors may be declared.
LAST_ACTOR = "bench_noop.third"


class DoneSignal(Middleware):
    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is None and message.actor_name == LAST_ACTOR:
            signal_done()
