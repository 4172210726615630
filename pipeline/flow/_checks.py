"""Checks of the flow-control declarations of a pipeline (both halves: rate limits, debounce,
batches; concurrency and singletons), at declaration and at `Registry.validate()` (keys against
the event's schema, one root stage for pipeline rules)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import DefinitionError
from ._concurrency import Concurrency
from ._keys import check_key
from ._priority import declare_urgent_queue
from ._rules import Batch, Debounce, RateLimit
from ._singleton import Singleton

if TYPE_CHECKING:
    from .._definitions import Pipeline, Stage

__all__ = ["check_declarations", "checked_rate_limit", "checked_concurrency", "is_gated", "check_pipeline",
           "declare_urgent_queue"]


def _typed(value: Any, kind: type, where: str, name: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise DefinitionError(f"{where}: {name}= takes a {kind.__name__}(...), not {value!r}")


def check_declarations(
    name: str, *, rate_limit: Any, debounce: Any, batch: Any, concurrency: Any = None, singleton: Any = None,
) -> None:
    where = f"pipeline {name!r}"
    _typed(rate_limit, RateLimit, where, "rate_limit")
    _typed(debounce, Debounce, where, "debounce")
    _typed(batch, Batch, where, "batch")
    _typed(concurrency, Concurrency, where, "concurrency")
    _typed(singleton, Singleton, where, "singleton")
    if debounce is not None and batch is not None:
        raise DefinitionError(f"{where}: declare debounce or batch, not both (a debounced run is one event)")
    if concurrency is not None and singleton is not None:
        raise DefinitionError(f"{where}: declare concurrency= or singleton=, not both "
                              f"(a singleton is already one run at a time per key)")
    if (concurrency is not None or singleton is not None) and (debounce is not None or batch is not None):
        # A run takes its slot when its event is emitted, but is folded into another at its first
        # stage: the two are not combined (yet); rate_limit and priority combine with either.
        raise DefinitionError(f"{where}: declare concurrency/singleton or debounce/batch, not both")


def checked_rate_limit(rate_limit: Any, where: str) -> RateLimit | None:
    _typed(rate_limit, RateLimit, where, "rate_limit")
    return rate_limit


def checked_concurrency(concurrency: Any, where: str) -> bool:
    """Whether a stage declares its own concurrency limit (refused if it is not a Concurrency)."""
    _typed(concurrency, Concurrency, where, "concurrency")
    return concurrency is not None


def pipeline_rules(pipeline: "Pipeline") -> bool:
    return any(r is not None for r in (pipeline.rate_limit, pipeline.debounce, pipeline.batch))


def is_gated(pipeline: "Pipeline", stage: "Stage") -> bool:
    """Whether the stage's messages pass the flow gate: it declares a rate limit, or it is a
    first stage of a pipeline that declares a rule about its runs' start."""
    return stage.rate_limit is not None or (not stage.after and pipeline_rules(pipeline))


def check_pipeline(pipeline: "Pipeline", schema: Any) -> None:
    """What can only be checked once every schema is registered: each key names a field of the
    event's schema; a rule about a run's start needs exactly one first stage to apply to."""
    where = f"pipeline {pipeline.name!r}"
    for label, rule in (("rate_limit", pipeline.rate_limit), ("debounce", pipeline.debounce),
                        ("batch", pipeline.batch), ("concurrency", pipeline.concurrency),
                        ("singleton", pipeline.singleton)):
        if rule is not None and rule.key is not None:
            check_key(rule.key, schema, f"{where} {label}")
    for stage in pipeline.stages.values():
        for label, rule in (("rate_limit", stage.rate_limit), ("concurrency", stage.concurrency)):
            if rule is not None and rule.key is not None:
                check_key(rule.key, schema, f"{where}: stage {stage.name!r} {label}")
    if pipeline_rules(pipeline) and len(pipeline.roots) != 1:
        raise DefinitionError(f"{where}: rate_limit, debounce and batch apply to a run's start, which needs "
                              f"exactly one first stage (it has {[s.name for s in pipeline.roots]})")
