"""Sends the bench done-signal once a run is recorded done: after the message whose processing
ended the run (the engine committed the last stage's success and the run's), not from inside
the stage function, which returns before the run is recorded done.

With linear chains continued in the same worker thread (`PIPELINE_INLINE_CHAINS`), the message
that ends a run may be the one of its first stage, so the engine says which runs the current
message ended (`pipeline._runtime.runs_ended`). An engine without that hook: a run is done after
the message of the last stage of a bench pipeline."""
from __future__ import annotations

from typing import Any

from dramatiq.middleware import Middleware

from tests.bench.done import signal_done

# Not imported from .pipelines: middleware is built while the broker is being set up, before
# actors may be declared (and before the engine's models can be imported).
LAST_ACTOR = "bench_noop.third"


class DoneSignal(Middleware):
    def __init__(self) -> None:
        self._runs_ended = None
        self._last_actors: set[str] | None = None

    def _hooks(self) -> None:
        try:
            from pipeline._runtime import runs_ended
        except ImportError:
            runs_ended = None
        if not runs_ended:
            from pipeline._definitions import registry

            self._last_actors = {f"{p.name}.{sink}" for p in registry.pipelines.values()
                                 if p.name.startswith("bench_") for sink in p.sinks} | {LAST_ACTOR}
        self._runs_ended = runs_ended or False  # last: other threads read it first

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is not None:
            return
        if self._runs_ended is None:
            self._hooks()
        if self._runs_ended:
            for _run_id, pipeline, status in self._runs_ended():
                if status == "succeeded" and pipeline.startswith("bench_"):
                    signal_done()
        elif message.actor_name in self._last_actors:
            signal_done()
