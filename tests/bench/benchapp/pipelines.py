"""The benchmark's pipelines, all of no-op stages with the engine's default retries, backoff and
time limit. `BENCH_OURS_QUEUE` names their queue so that several worker sets (SQLite, PostgreSQL,
...) can run side by side.

- `bench_noop` (event `bench.started`): three stages passing the ~200-byte payload along; the
  pipeline of the main table.
- `bench_chain_3`, `bench_chain_10`, `bench_chain_30` (`bench.chain3` ...): the same, 3, 10 and 30
  stages long: does the cost per stage stay flat as a chain grows?
- `bench_fanout_10`, `bench_fanout_100`, `bench_fanout_1000` (`bench.fanout10` ...): one stage,
  then N branches after it, then one fan-in stage after all of them. The fan-in stage tells the
  driver it started (`FANIN_QUEUE_SUFFIX`), once per attempt, so a second start shows.
- with `BENCH_FLOW_CONCURRENCY=<limit>x<keys>`, `bench_noop` declares a concurrency key (the
  flow-control figure; the producer then spreads `customer_email` over that many keys).
- `bench_big` (`bench.big`): three stages, a 64 KiB payload; each stage reads the payload and
  returns a small result (the payload's cost, not the results').

The driver counts a run as done when `benchapp.middleware.DoneSignal` says its run ended."""
import os
import time

from pydantic import BaseModel

from pipeline import Concurrency, Pipeline, StageContext, event_type

QUEUE = os.environ.get("BENCH_OURS_QUEUE", "bench_ours")
CHAIN_LENGTHS = (3, 10, 30)
FANOUT_WIDTHS = (10, 100, 1000)  # 10: the smoke run's
FANIN_QUEUE_SUFFIX = ".fanin"


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


@event_type("bench.big")
class BenchBig(BenchStarted):
    blob: str


# BENCH_FLOW_CONCURRENCY="8x64": the same pipeline under flow control, at most 8 runs in progress
# per customer (the producer spreads the runs over 64 customers): what a concurrency key costs.
FLOW = os.environ.get("BENCH_FLOW_CONCURRENCY", "")
noop = Pipeline("bench_noop", on="bench.started", queue=QUEUE,
                concurrency=Concurrency(limit=int(FLOW.split("x")[0]), key="customer_email") if FLOW else None)
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


# --- chains of 3, 10 and 30 stages -----------------------------------------------------------------

def pass_along(ctx: StageContext) -> dict:
    """The previous stage's result (the first stage: the payload), like bench_noop's stages."""
    for result in ctx.results.values():
        return result
    return ctx.event.payload


def _chain(length: int) -> Pipeline:
    event_type(f"bench.chain{length}")(BenchStarted)
    chain = Pipeline(f"bench_chain_{length}", on=f"bench.chain{length}", queue=QUEUE)
    for i in range(1, length + 1):
        chain.stage(f"s{i:02d}")(pass_along)
    return chain


chains = {n: _chain(n) for n in CHAIN_LENGTHS}


# --- fan-out to N branches, then one fan-in --------------------------------------------------------

def split(ctx: StageContext) -> dict:
    return {"seq": ctx.event.payload["seq"]}


def branch(ctx: StageContext) -> None:
    return None


def fan_in(ctx: StageContext) -> dict:
    from tests.bench.done import signal_done

    queue = os.environ.get("BENCH_DONE_QUEUE")
    if queue:
        signal_done(f'{{"run_id": "{ctx.run_id}", "attempt": {ctx.attempt}, "t": {time.time()!r}}}'.encode(),
                    queue=queue + FANIN_QUEUE_SUFFIX)
    return {"branches": len(ctx.results)}


def _fanout(width: int) -> Pipeline:
    event_type(f"bench.fanout{width}")(BenchStarted)
    fan = Pipeline(f"bench_fanout_{width}", on=f"bench.fanout{width}", queue=QUEUE)
    fan.stage("split")(split)
    digits = len(str(width - 1))
    names = [f"b{i:0{digits}d}" for i in range(width)]
    for name in names:
        fan.stage(name, after=["split"])(branch)
    fan.stage("join", after=names)(fan_in)
    return fan


fanouts = {n: _fanout(n) for n in FANOUT_WIDTHS}


# --- a 64 KiB payload -------------------------------------------------------------------------------

big = Pipeline("bench_big", on="bench.big", queue=QUEUE)


@big.stage()
def read_1(ctx: StageContext) -> dict:
    return {"seq": ctx.event.payload["seq"], "blob_bytes": len(ctx.event.payload["blob"])}


@big.stage()
def read_2(ctx: StageContext) -> dict:
    return {"seq": ctx.event.payload["seq"], "blob_bytes": len(ctx.event.payload["blob"])}


@big.stage()
def read_3(ctx: StageContext) -> dict:
    return {"seq": ctx.event.payload["seq"], "blob_bytes": len(ctx.event.payload["blob"])}
