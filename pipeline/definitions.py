"""Declaring pipelines and their stages: a DAG, linear by default, checked as it is declared."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import dramatiq
from dramatiq.errors import Retry

from . import conf
from .errors import DefinitionError
from .flow import Concurrency, Singleton, check_key
from .schemas import schemas

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
OUTCOME_TYPES = ("run.succeeded", "run.failed", "run.cancelled")

StageFunction = Callable[[Any], Any]


@dataclass(frozen=True)
class Stage:
    pipeline: "Pipeline"
    name: str
    fn: StageFunction
    after: tuple[str, ...]
    retries: int
    backoff: tuple[float, float]
    timeout: float
    throws: tuple[type[BaseException], ...] = ()
    concurrency: Concurrency | None = None  # its own limit (pipeline.flow.stage_slots)
    actor: Any = field(default=None, compare=False, repr=False)

    @property
    def actor_name(self) -> str:
        return f"{self.pipeline.name}.{self.name}"


class Pipeline:
    """A named DAG of stages started by an event type (`on`), by a schedule or by hand.

    Stages run in declaration order unless they say `after=[...]`; naming only earlier stages
    in `after` keeps every pipeline acyclic by construction."""

    def __init__(
        self,
        name: str,
        on: str | None = None,
        *,
        queue: str | None = None,
        of: list[str] | tuple[str, ...] | None = None,
        emits_outcome: bool = True,
        concurrency: Concurrency | None = None,
        singleton: Singleton | None = None,
    ) -> None:
        """`on="run.succeeded"` (or run.failed, run.cancelled) with `of=[...]` subscribes to
        the outcome of the named pipelines; `emits_outcome=False` keeps this pipeline's own
        outcome from being emitted (for pipelines that deliver outcomes elsewhere).
        `concurrency` and `singleton`: flow control (`pipeline.flow`), at most one of the two."""
        if not _NAME_RE.match(name):
            raise DefinitionError(f"pipeline name {name!r} must be lower_snake_case")
        if name in registry.pipelines:
            raise DefinitionError(f"pipeline {name!r} is declared twice")
        if on in OUTCOME_TYPES:
            if not of:
                raise DefinitionError(
                    f"pipeline {name!r} subscribes to {on!r}: say of which pipelines with of=[...] "
                    f"(every pipeline's outcome would include its own: a loop)"
                )
            if name in of:
                raise DefinitionError(f"pipeline {name!r} cannot be started by its own outcome ({on!r}): a loop")
        elif of:
            raise DefinitionError(f"pipeline {name!r}: of=[...] only goes with on={' / '.join(OUTCOME_TYPES)}")
        _check_flow(name, concurrency, singleton)
        self.name = name
        self.on = on
        self.concurrency = concurrency
        self.singleton = singleton
        # Whether runs of this pipeline go through flow control (a stage's own limit counts too, see
        # `_add`): one attribute read on the hot path.
        self.flow = concurrency is not None or singleton is not None
        self.stage_flow = False
        self.of = tuple(of or ())
        self.emits_outcome = emits_outcome
        self.queue = queue
        self.stages: dict[str, Stage] = {}
        self._children: dict[str, list[str]] = {}
        registry.pipelines[name] = self

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, on={self.on!r}, stages={list(self.stages)})"

    def stage(
        self,
        name: str | None = None,
        *,
        after: list[str] | tuple[str, ...] | None = None,
        retries: int | None = None,
        backoff: tuple[float, float] | None = None,
        timeout: float | None = None,
        throws: tuple[type[BaseException], ...] = (),
        concurrency: Concurrency | None = None,
    ) -> Callable[[StageFunction], StageFunction]:
        """Declares the decorated function as a stage: retried `retries` times with exponential
        backoff between `backoff[0]` and `backoff[1]` seconds, interrupted after `timeout` seconds;
        with `concurrency`, at most that many executions of it in progress (per key) at once."""

        def decorate(fn: StageFunction) -> StageFunction:
            self._add(
                Stage(
                    pipeline=self,
                    name=name or fn.__name__,
                    fn=fn,
                    after=self._parents(after),
                    retries=conf.get("PIPELINE_DEFAULT_RETRIES") if retries is None else retries,
                    backoff=tuple(backoff or conf.get("PIPELINE_DEFAULT_BACKOFF")),
                    timeout=conf.get("PIPELINE_DEFAULT_TIMEOUT") if timeout is None else timeout,
                    throws=tuple(throws),
                    concurrency=concurrency,
                )
            )
            return fn

        return decorate

    def _parents(self, after: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
        if after is None:
            return (list(self.stages)[-1],) if self.stages else ()
        if isinstance(after, str):
            after = [after]
        unknown = [p for p in after if p not in self.stages]
        if unknown:
            raise DefinitionError(
                f"pipeline {self.name!r}: after={list(after)} names unknown stage(s) {unknown}; "
                f"a stage can only follow stages declared before it (declared: {list(self.stages)})"
            )
        if len(set(after)) != len(after):
            raise DefinitionError(f"pipeline {self.name!r}: after={list(after)} names a stage twice")
        return tuple(after)

    def _add(self, stage: Stage) -> None:
        if not _NAME_RE.match(stage.name):
            raise DefinitionError(f"pipeline {self.name!r}: stage name {stage.name!r} must be lower_snake_case")
        if stage.name in self.stages:
            raise DefinitionError(f"pipeline {self.name!r}: stage {stage.name!r} is declared twice")
        if stage.retries < 0:
            raise DefinitionError(f"pipeline {self.name!r}: stage {stage.name!r} has negative retries")
        if len(stage.backoff) != 2 or not 0 <= stage.backoff[0] <= stage.backoff[1]:
            raise DefinitionError(
                f"pipeline {self.name!r}: stage {stage.name!r} backoff must be (min_seconds, max_seconds) with min <= max"
            )
        if stage.timeout <= 0:
            raise DefinitionError(f"pipeline {self.name!r}: stage {stage.name!r} timeout must be positive")
        if stage.concurrency is not None:
            if not isinstance(stage.concurrency, Concurrency):
                raise DefinitionError(f"pipeline {self.name!r}: stage {stage.name!r}: concurrency= takes a Concurrency(...)")
            self.flow = self.stage_flow = True
        object.__setattr__(stage, "actor", _declare_actor(stage, self.queue or conf.get("PIPELINE_DEFAULT_QUEUE")))
        self.stages[stage.name] = stage
        self._children[stage.name] = []
        for parent in stage.after:
            self._children[parent].append(stage.name)

    @property
    def roots(self) -> list[Stage]:
        return [s for s in self.stages.values() if not s.after]

    @property
    def sinks(self) -> list[str]:
        """The stages nothing runs after: a run has succeeded once all of them have."""
        return [name for name, children in self._children.items() if not children]

    def children(self, stage_name: str) -> list[Stage]:
        return [self.stages[c] for c in self._children.get(stage_name, [])]

    @property
    def event_type(self) -> str:
        """The event type that starts this pipeline; schedule-only pipelines get `<name>.requested`."""
        return self.on or f"{self.name}.requested"


def _check_flow(name: str, concurrency: Any, singleton: Any) -> None:
    if concurrency is not None and not isinstance(concurrency, Concurrency):
        raise DefinitionError(f"pipeline {name!r}: concurrency= takes a Concurrency(limit=..., key=...)")
    if singleton is not None and not isinstance(singleton, Singleton):
        raise DefinitionError(f"pipeline {name!r}: singleton= takes a Singleton(key=..., mode=...)")
    if concurrency is not None and singleton is not None:
        raise DefinitionError(f"pipeline {name!r}: declare concurrency= or singleton=, not both "
                              f"(a singleton is already one run at a time per key)")


def _retry_when(retries: int, exception: BaseException) -> bool:
    # The runtime decides about retries of user code itself (and raises Retry); anything else that
    # escapes is our own infrastructure failing (database down...): retry that a bounded number of times.
    return isinstance(exception, Retry) or retries < 10


def _declare_actor(stage: Stage, queue_name: str) -> Any:
    def run_stage(run_id: str) -> None:
        registry.run_stage(stage, run_id)

    run_stage.__name__ = run_stage.__qualname__ = stage.actor_name
    return dramatiq.actor(
        run_stage,
        actor_name=stage.actor_name,
        queue_name=queue_name,
        max_retries=None,
        retry_when=_retry_when,
        min_backoff=1000,
        max_backoff=60_000,
        time_limit=int(stage.timeout * 1000),
    )


StageRunner = Callable[[Stage, str], None]


class Registry:
    """The declared pipelines, and the runtime that runs their stages: declarations sit below the
    runtime, so the runtime is attached to them (by the app's `ready()`) rather than imported."""

    def __init__(self) -> None:
        self.pipelines: dict[str, Pipeline] = {}
        self._stage_runner: StageRunner | None = None

    def attach_runner(self, runner: StageRunner) -> None:
        """Called once per process by `PipelineConfig.ready()` with `pipeline.runtime.execute_stage`."""
        self._stage_runner = runner

    def run_stage(self, stage: Stage, run_id: str) -> None:
        """What a stage's actor does with its message."""
        if self._stage_runner is None:
            raise DefinitionError(f"stage {stage.actor_name!r} received a message before the pipeline app was "
                                  f"ready: add 'pipeline' to INSTALLED_APPS and call django.setup() first")
        self._stage_runner(stage, run_id)

    def get(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise DefinitionError(f"unknown pipeline {name!r} (known: {', '.join(sorted(self.pipelines)) or 'none'})")

    def subscribed_to(self, event_type: str, payload: dict[str, Any] | None = None) -> list[Pipeline]:
        """The pipelines an event starts; outcome events only start those naming its pipeline."""
        if event_type in OUTCOME_TYPES:
            source = (payload or {}).get("pipeline")
            return [p for p in self.pipelines.values() if p.on == event_type and source in p.of]
        return [p for p in self.pipelines.values() if p.on == event_type]

    def listens_to_outcome(self, event_type: str, pipeline: str) -> bool:
        return any(p.on == event_type and pipeline in p.of for p in self.pipelines.values())

    def validate(self) -> None:
        """Checks what can only be checked once every module is imported."""
        for pipeline in self.pipelines.values():
            if not pipeline.stages:
                raise DefinitionError(f"pipeline {pipeline.name!r} has no stages")
            if pipeline.on is not None and pipeline.on not in schemas:
                raise DefinitionError(
                    f"pipeline {pipeline.name!r} subscribes to {pipeline.on!r}, which has no registered event schema"
                )
            declared = [(pipeline.concurrency, ""), (pipeline.singleton, "")]
            declared += [(s.concurrency, f" stage {s.name!r}") for s in pipeline.stages.values()]
            for rule, stage in declared:
                if rule is not None and rule.key is not None:
                    check_key(rule.key, schemas.get(pipeline.on) if pipeline.on else None,
                              f"pipeline {pipeline.name!r}{stage}: {type(rule).__name__}")
            unknown = [name for name in pipeline.of if name not in self.pipelines]
            if unknown:
                raise DefinitionError(f"pipeline {pipeline.name!r}: of={list(pipeline.of)} names unknown pipeline(s) {unknown}")
        self._refuse_outcome_loops()

    def _refuse_outcome_loops(self) -> None:
        """A chain of pipelines each started by the previous one's outcome must not come back."""
        follows = {p.name: [q.name for q in self.pipelines.values() if p.name in q.of] for p in self.pipelines.values()}
        for start in follows:
            stack, seen = [(start, [start])], set()
            while stack:
                name, path = stack.pop()
                for nxt in follows.get(name, []):
                    if nxt == start:
                        raise DefinitionError(f"pipelines start each other by their outcomes in a loop: "
                                              f"{' -> '.join(path + [start])}")
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append((nxt, path + [nxt]))


registry = Registry()
