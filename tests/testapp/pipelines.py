"""Pipelines the tests drive through the real broker and worker processes."""
from pydantic import BaseModel, ConfigDict

from pipeline import Pipeline, StageContext, event_type

from .models import SideEffect


@event_type("test.started")
class TestStarted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int = 1
    fail_times: int = 0  # how many attempts of `flaky` fail before one succeeds


def _record(ctx: StageContext) -> None:
    SideEffect.objects.create(run_id=ctx.run_id, stage=ctx.stage, attempt=ctx.attempt)


three_stages = Pipeline("three_stages", on="test.started")


@three_stages.stage(retries=0, timeout=30)
def first(ctx: StageContext) -> dict:
    _record(ctx)
    return {"value": ctx.event.payload["value"] + 1}


@three_stages.stage(retries=0, timeout=30)
def second(ctx: StageContext) -> dict:
    _record(ctx)
    return {"value": ctx.results["first"]["value"] * 10}


@three_stages.stage(retries=0, timeout=30)
def third(ctx: StageContext) -> dict:
    _record(ctx)
    return {"value": ctx.results["second"]["value"] + 1, "key": ctx.idempotency_key}


@event_type("test.flaky")
class TestFlaky(BaseModel):
    fail_times: int = 0


flaky = Pipeline("flaky", on="test.flaky")


@flaky.stage(retries=0, timeout=30)
def prepare(ctx: StageContext) -> dict:
    _record(ctx)
    return {"prepared": True}


@flaky.stage(retries=2, backoff=(0.1, 0.5), timeout=30)
def unreliable(ctx: StageContext) -> dict:
    _record(ctx)
    if ctx.attempt <= ctx.event.payload["fail_times"]:
        raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")
    return {"attempt": ctx.attempt}


@flaky.stage(retries=0, timeout=30)
def finish(ctx: StageContext) -> dict:
    _record(ctx)
    return {"done": True}


ticks = Pipeline("ticks")


@ticks.stage(retries=0, timeout=30)
def tick(ctx: StageContext) -> dict:
    _record(ctx)
    return {}
