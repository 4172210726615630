"""The registry of declared pipelines: what an event starts, the checks that need every module
imported (`validate()`), and the runtime attached to run their stages. Declaring them is
`pipeline._definitions`' (which re-exports these names)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .errors import DefinitionError
from .flow import _checks as flow_checks
from ._schemas import schemas

if TYPE_CHECKING:
    from ._definitions import Pipeline, Stage

OUTCOME_TYPES = ("run.succeeded", "run.failed", "run.cancelled")

StageRunner = Callable[["Stage", str], None]


class Registry:
    """The declared pipelines, and the runtime that runs their stages: declarations sit below the
    runtime, so the runtime is attached to them (by the app's `ready()`) rather than imported."""

    def __init__(self) -> None:
        self.pipelines: dict[str, "Pipeline"] = {}
        self._stage_runner: StageRunner | None = None

    def attach_runner(self, runner: StageRunner) -> None:
        """Called once per process by `PipelineConfig.ready()` with `pipeline._runtime.execute_stage`."""
        self._stage_runner = runner

    def run_stage(self, stage: "Stage", run_id: str) -> None:
        """What a stage's actor does with its message."""
        if self._stage_runner is None:
            raise DefinitionError(f"stage {stage.actor_name!r} received a message before the pipeline app was "
                                  f"ready: add 'pipeline' to INSTALLED_APPS and call django.setup() first")
        self._stage_runner(stage, run_id)

    def get(self, name: str) -> "Pipeline":
        try:
            return self.pipelines[name]
        except KeyError:
            raise DefinitionError(f"unknown pipeline {name!r} (known: {', '.join(sorted(self.pipelines)) or 'none'})")

    def subscribed_to(self, event_type: str, payload: dict[str, Any] | None = None) -> list["Pipeline"]:
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
            unknown = [name for name in pipeline.of if name not in self.pipelines]
            if unknown:
                raise DefinitionError(f"pipeline {pipeline.name!r}: of={list(pipeline.of)} names unknown pipeline(s) {unknown}")
            flow_checks.check_pipeline(pipeline, schemas.get(pipeline.on) if pipeline.on else None)
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
