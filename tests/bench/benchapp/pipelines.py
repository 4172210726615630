"""The benchmark's pipeline: three no-op stages passing the ~200-byte payload along, with the
engine's default retries, backoff and time limit. `BENCH_OURS_QUEUE` names its queue so that
several worker sets (SQLite, PostgreSQL) can run side by side."""
import os

from pydantic import BaseModel

from pipeline import Pipeline, StageContext, event_type


class Item(BaseModel):
    sku: str
    quantity: int


@event_type("bench.started")
class BenchStarted(BaseModel):
    seq: int
    customer_email: str
    items: list[Item]
    total_cents: int
    note: str = ""


noop = Pipeline("bench_noop", on="bench.started", queue=os.environ.get("BENCH_OURS_QUEUE", "bench_ours"))
LAST_ACTOR = "bench_noop.third"


@noop.stage()
def first(ctx: StageContext) -> dict:
    return ctx.event.payload


@noop.stage()
def second(ctx: StageContext) -> dict:
    return ctx.results["first"]


@noop.stage()
def third(ctx: StageContext) -> dict:
    return ctx.results["second"]
