"""A user's pipeline as a type checker sees it: `make typecheck` runs `mypy --strict` over this
file and the public API, so a typed stage that reads `ctx.event.data` and names its parents by
function keeps type-checking (never imported by the tests: read by mypy only)."""
from __future__ import annotations

from pydantic import BaseModel

from pipeline import Pipeline, StageContext, emit, event_type


@event_type("typed.order_placed")
class OrderPlaced(BaseModel):
    order_id: int
    amount_cents: int


fulfil = Pipeline("typed_fulfil", on="typed.order_placed")


@fulfil.stage(retries=2)
def reserve(ctx: StageContext[OrderPlaced]) -> dict[str, int]:
    order: OrderPlaced = ctx.event.data
    return {"order_id": order.order_id}


@fulfil.stage(after=[reserve])
def charge(ctx: StageContext[OrderPlaced]) -> dict[str, int]:
    reserved: dict[str, int] = ctx.results["reserve"]
    return {"charged": ctx.event.data.amount_cents, "order_id": reserved["order_id"]}


def place(order_id: int) -> str:
    event_id: str = emit("typed.order_placed", OrderPlaced(order_id=order_id, amount_cents=100))
    return event_id


def read_untyped(ctx: StageContext) -> BaseModel:
    return ctx.event.data
