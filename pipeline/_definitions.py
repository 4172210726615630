"""Declaring pipelines and their stages: a DAG, linear by default, checked as it is declared."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import dramatiq
from dramatiq.errors import Retry

from . import conf
from .errors import DefinitionError
from .flow import _checks as flow_checks
from .flow._concurrency import Concurrency
from .flow._rules import NORMAL, Batch, Debounce, RateLimit, check_priority
from .flow._singleton import Singleton
from ._pipelines_registry import (  # re-exported: declarations and the registry were one module
    OUTCOME_TYPES as OUTCOME_TYPES,
    Registry as Registry,
    StageRunner as StageRunner,
    registry as registry,
)

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

StageFunction = Callable[[Any], Any]
F = TypeVar("F", bound=Callable[..., Any])
# A parent in `after=`: a stage's name, or the stage's function itself.
StageRef = str | Callable[..., Any]


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
    rate_limit: RateLimit | None = None
    concurrency: Concurrency | None = None  # its own limit (pipeline.flow._stage_slots)
    actor: Any = field(default=None, compare=False, repr=False)
    # Whether a message of this stage passes `pipeline.flow._gate` first (set by `Pipeline._add`):
    # False for stages that declare no flow control, which then cost nothing more.
    gated: bool = field(default=False, compare=False, repr=False)

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
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        batch: Batch | None = None,
        priority: str = NORMAL,
        concurrency: Concurrency | None = None,
        singleton: Singleton | None = None,
    ) -> None:
        """`on="run.succeeded"` (or run.failed, run.cancelled) with `of=[...]` subscribes to
        the outcome of the named pipelines; `emits_outcome=False` keeps this pipeline's own
        outcome from being emitted (for pipelines that deliver outcomes elsewhere). Flow control
        (`pipeline.flow`, README "Flow control"): `rate_limit` on the run's start, `debounce`,
        `batch`, `priority="urgent"`; `concurrency` or `singleton` (at most one of the two)."""
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
        flow_checks.check_declarations(name, rate_limit=rate_limit, debounce=debounce, batch=batch,
                                       concurrency=concurrency, singleton=singleton)
        self.rate_limit, self.debounce, self.batch = rate_limit, debounce, batch
        self.priority = check_priority(priority, f"pipeline {name!r}")
        self.stages: dict[str, Stage] = {}
        self._children: dict[str, list[str]] = {}
        registry.pipelines[name] = self

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, on={self.on!r}, stages={list(self.stages)})"

    def stage(
        self,
        name: str | None = None,
        *,
        after: StageRef | Sequence[StageRef] | None = None,
        retries: int | None = None,
        backoff: tuple[float, float] | None = None,
        timeout: float | None = None,
        throws: tuple[type[BaseException], ...] = (),
        rate_limit: RateLimit | None = None,
        concurrency: Concurrency | None = None,
    ) -> Callable[[F], F]:
        """Declares the decorated function as a stage: retried `retries` times with exponential
        backoff between `backoff[0]` and `backoff[1]` seconds, interrupted after `timeout` seconds;
        with `rate_limit`, started at most that often; with `concurrency`, at most that many
        executions of it in progress (per key) at once (README "Flow control").
        `after` names the stages it runs after, by name or by their functions (`after=[charge]`);
        by default, the stage declared just before. The function is returned unchanged."""

        def decorate(fn: F) -> F:
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
                    rate_limit=flow_checks.checked_rate_limit(rate_limit, f"pipeline {self.name!r}: stage {name or fn.__name__!r}"),
                    concurrency=concurrency,
                )
            )
            return fn

        return decorate

    def _parents(self, after: StageRef | Sequence[StageRef] | None) -> tuple[str, ...]:
        if after is None:
            return (list(self.stages)[-1],) if self.stages else ()
        if isinstance(after, str) or callable(after):
            after = [after]
        names = [self._stage_name(p) for p in after]
        unknown = [p for p in names if p not in self.stages]
        if unknown:
            raise DefinitionError(
                f"pipeline {self.name!r}: after={names} names unknown stage(s) {unknown}; "
                f"a stage can only follow stages declared before it (declared: {list(self.stages)})"
            )
        if len(set(names)) != len(names):
            raise DefinitionError(f"pipeline {self.name!r}: after={names} names a stage twice")
        return tuple(names)

    def _stage_name(self, parent: StageRef) -> str:
        """A parent named in `after=`: its name, or the name of this pipeline's stage whose
        function it is."""
        if isinstance(parent, str):
            return parent
        if not callable(parent):
            raise DefinitionError(f"pipeline {self.name!r}: after= takes stage names or stage functions, "
                                  f"not {parent!r}")
        names = [s.name for s in self.stages.values() if s.fn is parent]
        label = getattr(parent, "__qualname__", repr(parent))
        if not names:
            raise DefinitionError(f"pipeline {self.name!r}: after= names the function {label}, which is not a "
                                  f"stage of this pipeline declared before this one (declared: {list(self.stages)})")
        if len(names) > 1:
            raise DefinitionError(f"pipeline {self.name!r}: after= names the function {label}, which is the "
                                  f"function of stages {names}: name the one you mean")
        return names[0]

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
        if flow_checks.checked_concurrency(stage.concurrency, f"pipeline {self.name!r}: stage {stage.name!r}"):
            self.flow = self.stage_flow = True
        object.__setattr__(stage, "actor", _declare_actor(stage, self.queue or conf.get("PIPELINE_DEFAULT_QUEUE")))
        object.__setattr__(stage, "gated", flow_checks.is_gated(self, stage))
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


def _retry_when(retries: int, exception: BaseException) -> bool:
    # The runtime decides about retries of user code itself (and raises Retry); anything else that
    # escapes is our own infrastructure failing (database down...): retry that a bounded number of times.
    return isinstance(exception, Retry) or retries < 10


def _declare_actor(stage: Stage, queue_name: str) -> Any:
    def run_stage(run_id: str) -> None:
        registry.run_stage(stage, run_id)

    run_stage.__name__ = run_stage.__qualname__ = stage.actor_name
    actor = dramatiq.actor(
        actor_name=stage.actor_name,
        queue_name=queue_name,
        max_retries=None,
        retry_when=_retry_when,
        min_backoff=1000,
        max_backoff=60_000,
        time_limit=int(stage.timeout * 1000),
    )(run_stage)
    flow_checks.declare_urgent_queue(actor)
    return actor
