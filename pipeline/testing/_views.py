"""What a test reads of a run, and the assertions on it: `RunView` and `StageView`.

They are read from the run store (the models a production dashboard reads), never from the
in-process broker, so an assertion holds of what was committed, not of what was attempted."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageView:
    """One stage of a run as the run store holds it."""

    name: str
    status: str
    attempts: int
    result: Any
    error: str
    attempt_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """The error of each failed attempt, oldest first (`"RuntimeError: ..."`)."""
        return [entry.get("error", "") for entry in self.attempt_log]


@dataclass(frozen=True)
class RunView:
    """One run: its status, its stages (in the order they were created), and what it emitted and
    logged. Read once; `refresh()` reads it again."""

    id: str
    pipeline: str
    status: str
    error: str
    event_id: str
    trace_id: str
    trigger: str
    stages: dict[str, StageView]
    _logs: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @classmethod
    def load(cls, run_id: str, logs: list[dict[str, Any]] | None = None) -> "RunView":
        from ..models import Run, StageRun  # the app registry: pytest imports this before Django is set up

        run = Run.objects.select_related("event").get(id=run_id)
        stages = {
            s.stage: StageView(s.stage, s.status, s.attempts, s.result, s.error, list(s.attempt_log or []))
            for s in StageRun.objects.filter(run_id=run_id).order_by("id")
        }
        return cls(str(run.id), run.pipeline, run.status, run.error, str(run.event_id), run.event.trace_id,
                   run.trigger, stages, logs if logs is not None else [])

    def refresh(self) -> "RunView":
        return RunView.load(self.id, self._logs)

    # --- reading -------------------------------------------------------------------------------
    def stage(self, name: str) -> StageView:
        """The stage called `name`; a stage that never became ready (nothing ran it) is an
        AssertionError naming the stages that exist."""
        try:
            return self.stages[name]
        except KeyError:
            raise AssertionError(f"run {self.id} of {self.pipeline!r} has no stage {name!r} "
                                 f"(its stages: {list(self.stages)})") from None

    def result(self, stage: str) -> Any:
        """What `stage` returned (as stored: JSON)."""
        return self.stage(stage).result

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events this run's stages emitted (and its outcome event, when one was written):
        `{"id", "type", "payload"}` in the order they occurred. Events of the same trace, other
        than the one that started the run."""
        from ..models import Event  # the app registry: pytest imports this before Django is set up

        rows = Event.objects.filter(trace_id=self.trace_id).exclude(id=self.event_id).order_by("occurred_at")
        return [{"id": str(e.id), "type": e.type, "payload": e.payload} for e in rows]

    def logs(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """The log lines written for this run while the test ran (the dicts structlog rendered),
        optionally only those whose `event` is `event` and whose fields equal `fields`:
        `run.logs("stage.retrying", stage="charge")`."""
        lines = [line for line in self._logs if line.get("run_id") == self.id]
        if event is not None:
            lines = [line for line in lines if line.get("event") == event]
        return [line for line in lines if all(line.get(k) == v for k, v in fields.items())]

    # --- asserting ------------------------------------------------------------------------------
    def _describe(self) -> str:
        parts = [f"{name}: {s.status} after {s.attempts} attempt(s)" + (f" ({s.error})" if s.error else "")
                 for name, s in self.stages.items()]
        return f"run {self.id} of {self.pipeline!r} is {self.status}" + (f" ({self.error})" if self.error else "") \
            + "; stages: " + ("; ".join(parts) or "none")

    def assert_status(self, status: str) -> "RunView":
        if self.status != status:
            raise AssertionError(f"expected {status}, but {self._describe()}")
        return self

    def assert_succeeded(self) -> "RunView":
        """The run ended with every stage succeeded."""
        return self.assert_status("succeeded")

    def assert_failed(self, stage: str | None = None, error: str | None = None) -> "RunView":
        """The run failed; at `stage` if given, with `error` in its message if given."""
        self.assert_status("failed")
        if stage is not None and self.stage(stage).status != "failed":
            raise AssertionError(f"expected stage {stage!r} to have failed, but {self._describe()}")
        if error is not None and error not in self.error:
            raise AssertionError(f"expected the run's error to contain {error!r}, but {self._describe()}")
        return self

    def assert_cancelled(self) -> "RunView":
        return self.assert_status("cancelled")

    def assert_stage(self, name: str, *, status: str | None = None, attempts: int | None = None,
                     result: Any = ...) -> StageView:
        """Checks what is given of one stage: its status, its number of attempts, its result."""
        stage = self.stage(name)
        wrong = []
        if status is not None and stage.status != status:
            wrong.append(f"status {stage.status!r}, not {status!r}")
        if attempts is not None and stage.attempts != attempts:
            wrong.append(f"{stage.attempts} attempt(s), not {attempts}")
        if result is not ... and stage.result != result:
            wrong.append(f"result {stage.result!r}, not {result!r}")
        if wrong:
            raise AssertionError(f"stage {name!r}: " + ", ".join(wrong) + f" ({self._describe()})")
        return stage

    def assert_stages_ran(self, *names: str) -> "RunView":
        """Exactly these stages exist in the run (whatever their status), no other."""
        if set(self.stages) != set(names):
            raise AssertionError(f"expected stages {sorted(names)}, found {sorted(self.stages)} ({self._describe()})")
        return self
