"""Testing your pipelines in the test process: no broker, no worker process, no waiting.

`run_pipelines()` moves every stage actor onto Dramatiq's `StubBroker` and starts a
`dramatiq.Worker` in the test process for as long as it is open. What you emit runs through the
engine's real runtime, run store and state machine (claims, retries, fan-out and fan-in,
cancel, replay, outcome events), so a test sees what production would. Runs move only when the
test drains them: `drain()` (and `emit`, `start`, `run_of`, `run`, `runs`, which drain first)
returns once every message is processed (`StubBroker.join` + `Worker.join`: no polling, no
sleeps); between drains the worker is paused, so a test can emit, act on a pending run (cancel
it, fire a schedule again), then drain.

With pytest (the plugin is registered by the package's `pytest11` entry point)::

    def test_an_order_is_fulfilled(pipelines):            # a fixture: runs in the `db` transaction
        event_id = pipelines.emit("order.placed", {"order_id": 7})
        run = pipelines.run_of(event_id)                   # drains first
        run.assert_succeeded()
        assert run.result("charge") == {"charged": 7}

    def test_a_failing_charge_is_retried(pipelines):
        pipelines.fail("fulfil_order.charge", times=2, exc=TimeoutError("gateway"))
        run = pipelines.run_of(pipelines.emit("order.placed", {"order_id": 7}))
        run.assert_stage("charge", status="succeeded", attempts=3)
        assert run.logs("stage.retrying", stage="charge")

With unittest or Django's `TestCase`::

    class FulfilmentTests(PipelinesTestMixin, TestCase):
        def test_an_order_is_fulfilled(self):
            run = self.pipelines.run_of(self.pipelines.emit("order.placed", {"order_id": 7}))
            run.assert_succeeded()

Transactions: inside a test transaction (`TestCase`, pytest-django's `db`) the worker shares the
test's connection and `drain()` runs the `transaction.on_commit` callbacks the emit registered
(it publishes after commit) as if the transaction had committed; everything is rolled back at
the end of the test. In `TransactionTestCase` (`transactional_db`) the worker commits on its own
connections, through the group-commit writer, exactly as `rundramatiq` does.

Retries do not wait: a retry's backoff is enqueued for now (the stored `stage.retrying` line
still says what production would wait). Schedules: `schedules.testing.ScheduleClock`."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .._definitions import Stage, registry
from ..logging import line_observers
from ._broker import DrainTimeout, InProcessBroker
from ._views import RunView, StageView

__all__ = ["InProcessPipelines", "Injected", "run_pipelines", "PipelinesTestMixin", "RunView", "StageView",
           "DrainTimeout"]


class Injected:
    """A failure injected into a stage by `InProcessPipelines.fail`: `calls` counts the calls
    of the stage since, `failed` how many of them raised."""

    def __init__(self, stage: Stage, times: int | None, exc: BaseException | type[BaseException]) -> None:
        self.stage = stage
        self.times = times
        self.exc = exc
        self.calls = 0
        self.failed = 0
        self._original = stage.fn
        self._lock = threading.Lock()

    def __call__(self, ctx: Any) -> Any:
        with self._lock:
            self.calls += 1
            failing = self.times is None or self.failed < self.times
            if failing:
                self.failed += 1
        if failing:
            raise self.exc() if isinstance(self.exc, type) else self.exc
        return self._original(ctx)

    def restore(self) -> None:
        object.__setattr__(self.stage, "fn", self._original)


def find_stage(ref: str | Callable[..., Any]) -> Stage:
    """A declared stage by `"pipeline.stage"` or by its function (refused when the function is
    the stage of several pipelines: name it then)."""
    if isinstance(ref, str):
        pipeline, _, name = ref.partition(".")
        stage = registry.pipelines[pipeline].stages.get(name) if pipeline in registry.pipelines else None
        if stage is None:
            raise LookupError(f"no stage {ref!r}: name it 'pipeline.stage' (pipelines: {sorted(registry.pipelines)})")
        return stage
    found = [s for p in registry.pipelines.values() for s in p.stages.values()
             if s.fn is ref or getattr(s.fn, "_original", None) is ref]
    if len(found) != 1:
        where = [s.actor_name for s in found]
        raise LookupError(f"{getattr(ref, '__name__', ref)!r} is the function of {len(found)} stages {where}: "
                          f"name one as 'pipeline.stage'")
    return found[0]


class InProcessPipelines:
    """Runs the pipelines of what a test emits, in the test process; see the module's docstring."""

    def __init__(self, worker_threads: int = 1) -> None:
        self.log_lines: list[dict[str, Any]] = []
        self._observe = lambda line: self.log_lines.append(dict(line))
        line_observers.append(self._observe)
        self._injected: list[Injected] = []
        try:
            self._broker = InProcessBroker(worker_threads=worker_threads)
        except BaseException:
            line_observers.remove(self._observe)
            raise
        self.broker = self._broker.broker
        self.worker = self._broker.worker

    # --- starting work --------------------------------------------------------------------------
    def emit(self, type: str, payload: Any, **options: Any) -> str:
        """`pipeline.emit`, then `drain()`: returns the event id once its runs have gone as far as
        they can."""
        from .._events import emit  # the app registry: pytest imports this before Django is set up

        event_id = emit(type, payload, **options)
        self.drain()
        return event_id

    def start(self, pipeline: str, payload: Any = None, **options: Any) -> RunView:
        """`pipeline.start`, then `drain()`: returns the run."""
        from .._events import start  # the app registry: pytest imports this before Django is set up

        return self.run_of(start(pipeline, payload, **options))

    def drain(self, timeout: float = 60.0) -> None:
        """Processes every message until none is left (those the processing publishes too).
        Raises `DrainTimeout` if that takes longer than `timeout` seconds (a stage that never
        ends, or messages that keep coming)."""
        self._broker.drain(timeout)

    # --- reading runs ---------------------------------------------------------------------------
    def run_of(self, event_id: str, pipeline: str | None = None) -> RunView:
        """The run the event started (of `pipeline`, when it started several), after `drain()`."""
        from ..models import Run  # the app registry: pytest imports this before Django is set up

        self.drain()
        query = Run.objects.filter(event_id=event_id, replay_of__isnull=True)
        if pipeline is not None:
            query = query.filter(pipeline=pipeline)
        ids = [str(i) for i in query.values_list("id", flat=True)]
        if len(ids) != 1:
            names = sorted(Run.objects.filter(event_id=event_id).values_list("pipeline", flat=True))
            raise AssertionError(f"event {event_id} started {len(ids)} run(s) {'of ' + repr(pipeline) if pipeline else ''}"
                                 f" (runs of: {names}); name the pipeline" if len(ids) > 1 else
                                 f"event {event_id} started no run{' of ' + repr(pipeline) if pipeline else ''} "
                                 f"(runs of: {names})")
        return RunView.load(ids[0], self.log_lines)

    def run(self, run_id: str) -> RunView:
        """A run by its id, after `drain()`."""
        self.drain()
        return RunView.load(str(run_id), self.log_lines)

    def runs(self, pipeline: str | None = None) -> list[RunView]:
        """Every run (of `pipeline`), oldest first, after `drain()`."""
        from ..models import Run  # the app registry: pytest imports this before Django is set up

        self.drain()
        query = Run.objects.order_by("created_at", "id")
        if pipeline is not None:
            query = query.filter(pipeline=pipeline)
        return [RunView.load(str(i), self.log_lines) for i in query.values_list("id", flat=True)]

    def logs(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Every log line written while this was open (optionally those whose `event` and fields match)."""
        lines = self.log_lines if event is None else [l for l in self.log_lines if l.get("event") == event]
        return [line for line in lines if all(line.get(k) == v for k, v in fields.items())]

    # --- acting on runs ------------------------------------------------------------------------
    def replay(self, run_id: str, *, from_start: bool = False) -> RunView:
        """`pipeline.replay`, then `drain()`: returns the replayed (or, from the start, the new) run."""
        from .._operations import replay  # the app registry: pytest imports this before Django is set up

        return self.run(replay(str(run_id), from_start=from_start))

    def cancel(self, run_id: str) -> RunView:
        """`pipeline.cancel`, then `drain()`."""
        from .._operations import cancel  # the app registry: pytest imports this before Django is set up

        cancel(str(run_id))
        return self.run(run_id)

    # --- injecting failures ------------------------------------------------------------------------
    def fail(self, stage: str | Callable[..., Any], times: int | None = 1,
             exc: BaseException | type[BaseException] | None = None) -> Injected:
        """Makes `stage` (`"pipeline.stage"` or its function) raise `exc` on its next `times`
        calls (every call with `times=None`), then run as declared. Undone when this closes."""
        found = find_stage(stage)
        error = exc if exc is not None else RuntimeError(f"failure injected into {found.actor_name}")
        injected = Injected(found, times, error)
        object.__setattr__(found, "fn", injected)
        self._injected.append(injected)
        return injected

    def close(self) -> None:
        """Stops the worker, gives the actors their broker back, undoes injected failures."""
        try:
            self._broker.close()
        finally:
            for injected in reversed(self._injected):
                injected.restore()
            self._injected.clear()
            if self._observe in line_observers:
                line_observers.remove(self._observe)


@contextmanager
def run_pipelines(worker_threads: int = 1) -> Iterator[InProcessPipelines]:
    """`InProcessPipelines` for the duration of a `with` block."""
    pipelines = InProcessPipelines(worker_threads=worker_threads)
    try:
        yield pipelines
    finally:
        pipelines.close()


class PipelinesTestMixin:
    """For unittest and Django test cases: `self.pipelines` is an `InProcessPipelines` open for
    each test (put the mixin before `TestCase` in the bases)."""

    pipelines: InProcessPipelines

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.pipelines = InProcessPipelines()
        self.addCleanup(self.pipelines.close)  # type: ignore[attr-defined]
