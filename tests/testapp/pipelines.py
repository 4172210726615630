"""Pipelines the tests drive through the real broker and worker processes."""
from pydantic import BaseModel, ConfigDict

from pipeline import Batch, Concurrency, Debounce, Pipeline, RateLimit, Singleton, StageContext, event_type

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


def _switch_on(name: str) -> bool:
    from .models import Switch

    return Switch.objects.filter(name=name).exists()


@event_type("test.diamond")
class TestDiamond(BaseModel):
    n: int


diamond = Pipeline("diamond", on="test.diamond")


@diamond.stage(retries=3, backoff=(0.05, 0.5), timeout=30)
def split(ctx: StageContext) -> dict:
    _record(ctx)
    return {"n": ctx.event.payload["n"]}


@diamond.stage(after=["split"], retries=3, backoff=(0.05, 0.5), timeout=30)
def left(ctx: StageContext) -> dict:
    _record(ctx)
    return {"left": ctx.results["split"]["n"] * 2}


@diamond.stage(after=["split"], retries=3, backoff=(0.05, 0.5), timeout=30)
def right(ctx: StageContext) -> dict:
    _record(ctx)
    return {"right": ctx.results["split"]["n"] * 3}


@diamond.stage(after=["left", "right"], retries=3, backoff=(0.05, 0.5), timeout=30)
def join(ctx: StageContext) -> dict:
    _record(ctx)
    return {"sum": ctx.results["left"]["left"] + ctx.results["right"]["right"], "parents": sorted(ctx.results)}


@event_type("test.killable")
class TestKillable(BaseModel):
    sleep: float = 3.0  # how long `slow` takes
    # ...on its second and later attempts, when set: a test that kills or drains its worker gives the
    # first attempt far longer than its own reaction takes on a busy machine, and the rerun no longer.
    retry_sleep: float | None = None


killable = Pipeline("killable", on="test.killable", queue="killable")


@killable.stage(retries=3, backoff=(0.1, 1), timeout=60)
def before_kill(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@killable.stage(retries=3, backoff=(0.1, 1), timeout=60)
def slow(ctx: StageContext) -> dict:
    import time

    _record(ctx)
    payload = ctx.event.payload
    time.sleep(payload["sleep"] if ctx.attempt == 1 or payload["retry_sleep"] is None else payload["retry_sleep"])
    return {"attempt": ctx.attempt}


@killable.stage(retries=3, backoff=(0.1, 1), timeout=60)
def after_kill(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@event_type("test.fixable")
class TestFixable(BaseModel):
    pass


fixable = Pipeline("fixable", on="test.fixable")


@fixable.stage(retries=0, timeout=30)
def setup(ctx: StageContext) -> dict:
    _record(ctx)
    return {"ready": True}


@fixable.stage(retries=1, backoff=(0.05, 0.1), timeout=30)
def breakable(ctx: StageContext) -> dict:
    _record(ctx)
    if _switch_on("broken"):
        raise ValueError("dependency is broken")
    return {"ok": ctx.results["setup"]["ready"]}


@fixable.stage(retries=0, timeout=30)
def wrap_up(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@event_type("test.cancellable")
class TestCancellable(BaseModel):
    pass


cancellable = Pipeline("cancellable", on="test.cancellable")


@cancellable.stage(retries=0, timeout=30)
def wait_for_cancel(ctx: StageContext) -> dict:
    import time

    _record(ctx)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if ctx.cancelled:
            return {"stopped_early": True}
        time.sleep(0.1)
    return {"stopped_early": False}


@cancellable.stage(retries=0, timeout=30)
def never_after_cancel(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@event_type("test.slow")
class TestSlow(BaseModel):
    pass


too_slow = Pipeline("too_slow", on="test.slow")


@too_slow.stage(retries=1, backoff=(0.05, 0.1), timeout=1)
def sleeps_past_its_limit(ctx: StageContext) -> dict:
    import time

    _record(ctx)
    for _ in range(200):  # 10 s of Python work; the time limit interrupts it between calls
        time.sleep(0.05)
    return {}


slow_ticks = Pipeline("slow_ticks")


@slow_ticks.stage(retries=0, timeout=30)
def slow_tick(ctx: StageContext) -> dict:
    import time

    _record(ctx)
    time.sleep(2.5)
    return {}


@event_type("test.secretive")
class TestSecretive(BaseModel):
    api_token: str
    card_number: str
    note: str


secretive = Pipeline("secretive", on="test.secretive")


@secretive.stage(retries=0, timeout=30)
def leaky(ctx: StageContext) -> dict:
    payload = ctx.event.payload
    ctx.log.info("leaky.payload", payload=payload)
    raise PermissionError(f"upstream refused api_token={payload['api_token']} for card {payload['card_number']}")


alert_on_failure = Pipeline("alert_on_failure", on="run.failed", of=["fixable"])


@alert_on_failure.stage(retries=0, timeout=30)
def alert(ctx: StageContext) -> dict:
    _record(ctx)
    return {"failed_run": ctx.event.payload["run_id"], "error": ctx.event.payload["error"]}


# --- Linear chains continued inline (tests/pipeline/test_inline_chains.py). On queues of their own, so the
# workers those tests start consume nothing else and no other test's worker takes their messages.
INLINE_QUEUE = "inline_chains"
INLINE_KILL_QUEUE = "inline_kill"


def _sleep_for(seconds: float) -> None:
    """Sleeps in short steps (a stage's time limit interrupts Python code between steps)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


@event_type("test.inline_chain")
class TestInlineChain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail_times: int = 0  # how many attempts of `chain_middle` fail before one succeeds


inline_chain = Pipeline("inline_chain", on="test.inline_chain", queue=INLINE_QUEUE)


@inline_chain.stage(retries=0, timeout=30)
def chain_start(ctx: StageContext) -> dict:
    _record(ctx)
    return {"n": 1}


@inline_chain.stage(retries=2, backoff=(0.1, 0.5), timeout=30)
def chain_middle(ctx: StageContext) -> dict:
    _record(ctx)
    if ctx.attempt <= ctx.event.payload["fail_times"]:
        raise RuntimeError(f"chain_middle attempt {ctx.attempt} failed on purpose")
    return {"n": ctx.results["chain_start"]["n"] + 1}


@inline_chain.stage(retries=0, timeout=30)
def chain_end(ctx: StageContext) -> dict:
    _record(ctx)
    return {"n": ctx.results["chain_middle"]["n"] + 1}


@event_type("test.inline_long_stages")
class TestInlineLongStages(BaseModel):
    pass


# Two stages of 2 s each under a 3.5 s limit each: the chain takes longer than one stage's limit (and
# each stage has 1.5 s to spare for its own bookkeeping on a busy machine).
inline_long_stages = Pipeline("inline_long_stages", on="test.inline_long_stages", queue=INLINE_QUEUE)


@inline_long_stages.stage(retries=0, timeout=3.5)
def long_first(ctx: StageContext) -> dict:
    _record(ctx)
    _sleep_for(2)
    return {}


@inline_long_stages.stage(retries=0, timeout=3.5)
def long_second(ctx: StageContext) -> dict:
    _record(ctx)
    _sleep_for(2)
    return {}


@event_type("test.inline_tight_child")
class TestInlineTightChild(BaseModel):
    pass


# A roomy first stage, then a child whose own limit (1 s) is far shorter than its parent's (30 s).
inline_tight_child = Pipeline("inline_tight_child", on="test.inline_tight_child", queue=INLINE_QUEUE)


@inline_tight_child.stage(retries=0, timeout=30)
def roomy_parent(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@inline_tight_child.stage(retries=0, timeout=1)
def tight_child(ctx: StageContext) -> dict:
    _record(ctx)
    _sleep_for(10)
    return {}


@event_type("test.inline_killable")
class TestInlineKillable(BaseModel):
    sleep: float = 30.0  # how long the first attempt of `kill_slow` sleeps (the test kills it meanwhile)


inline_killable = Pipeline("inline_killable", on="test.inline_killable", queue=INLINE_KILL_QUEUE)


@inline_killable.stage(retries=3, backoff=(0.1, 1), timeout=60)
def kill_before(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@inline_killable.stage(retries=3, backoff=(0.1, 1), timeout=60)
def kill_slow(ctx: StageContext) -> dict:
    _record(ctx)
    if ctx.attempt == 1:
        _sleep_for(ctx.event.payload["sleep"])
    return {"attempt": ctx.attempt}


@inline_killable.stage(retries=3, backoff=(0.1, 1), timeout=60)
def kill_after(ctx: StageContext) -> dict:
    _record(ctx)
    return {}


@event_type("test.traced")
class TestTraced(BaseModel):
    pass


traced = Pipeline("traced", on="test.traced")


@traced.stage(retries=0, timeout=30)
def call_out(ctx: StageContext) -> dict:
    """What a stage would send to another service to continue its run's trace."""
    return ctx.trace_headers()


@event_type("test.outage")
class TestOutage(BaseModel):
    sleep: float = 0.2  # seconds each stage takes, so that runs are in flight when the store goes


OUTAGE_QUEUE = "outage"
outage_chain = Pipeline("outage_chain", on="test.outage", queue=OUTAGE_QUEUE)


def _sleep_then_record(ctx: StageContext) -> dict:
    """A stage that takes `sleep` seconds (so that runs are in flight when something goes down)
    and leaves one side-effect row per execution (so a stage run twice shows)."""
    _sleep_for(ctx.event.payload["sleep"])
    _record(ctx)
    return {}


# Each stage's side effect is a row in the run store's database: while it is unreachable the
# stage's own write fails (a failed attempt, retried once the outcome could be recorded).
for _name in ("outage_one", "outage_two", "outage_three"):
    outage_chain.stage(_name, retries=5, backoff=(0.2, 2), timeout=120)(_sleep_then_record)


@event_type("test.cluster")
class TestCluster(BaseModel):
    n: int = 0
    sleep: float = 0.02


CLUSTER_QUEUE = "cluster"
cluster_chain = Pipeline("cluster_chain", on="test.cluster", queue=CLUSTER_QUEUE)


for _name in ("cluster_one", "cluster_two", "cluster_three"):
    cluster_chain.stage(_name, retries=3, backoff=(0.2, 2), timeout=60)(_sleep_then_record)


def emit_steadily(count: int, per_second: float, event_type: str = "test.cluster") -> None:
    """Emits `count` events at a steady rate (the cluster test runs this in a process of its own,
    against the cluster): one event every 1/per_second seconds, late ones not made up in a burst."""
    import time

    from pipeline import emit

    start = time.monotonic()
    for n in range(count):
        emit(event_type, {"n": n})
        time.sleep(max(0.0, start + (n + 1) / per_second - time.monotonic()))


# --- Flow control: rate limits, debounce, priority, batching (tests/pipeline/test_flow_declarations.py,
# test_flow_logic.py, test_flow_rates_on_broker.py) ----

FLOW_QUEUE = "flow"  # one queue of their own: a worker of the flow tests consumes only these
PRIORITY_QUEUE = "flow_priority"  # filled before its worker starts (the priority test)


class TestFlow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = "k"
    seq: int = 0


for _flow_type in ("test.flow_throttle", "test.flow_drop", "test.flow_debounce", "test.flow_debounce_burst",
                   "test.flow_batch", "test.flow_priority"):
    event_type(_flow_type)(TestFlow)


def _seq(ctx: StageContext) -> dict:
    _record(ctx)
    return {"seq": ctx.event.payload["seq"]}


flow_throttled = Pipeline("flow_throttled", on="test.flow_throttle", queue=FLOW_QUEUE)
flow_throttled.stage("prepare", retries=0, timeout=30)(_seq)  # continued inline, then the gate
flow_throttled.stage("call_api", retries=0, timeout=30, rate_limit=RateLimit(10, per=1.0, burst=2))(_seq)

flow_dropped = Pipeline("flow_dropped", on="test.flow_drop", queue=FLOW_QUEUE,
                        rate_limit=RateLimit(1, per=600, key="key", burst=1, mode="drop"))
flow_dropped.stage("only", retries=0, timeout=30)(_seq)

flow_debounced = Pipeline("flow_debounced", on="test.flow_debounce", queue=FLOW_QUEUE,
                          debounce=Debounce(seconds=2, key="key", max_wait=5))
flow_debounced.stage("reindex", retries=0, timeout=30)(_seq)
# Without a maximum wait: how many events one window takes depends only on their spacing.
flow_debounced_burst = Pipeline("flow_debounced_burst", on="test.flow_debounce_burst", queue=FLOW_QUEUE,
                                debounce=Debounce(seconds=2, key="key"))
flow_debounced_burst.stage("reindex", retries=0, timeout=30)(_seq)

flow_batched = Pipeline("flow_batched", on="test.flow_batch", queue=FLOW_QUEUE,
                        batch=Batch(size=25, seconds=600, key="key"))


@flow_batched.stage(retries=0, timeout=30)
def load_batch(ctx: StageContext) -> dict:
    _record(ctx)
    return {"seqs": [e.payload["seq"] for e in ctx.batch or []], "events": [e.id for e in ctx.batch or []]}


flow_priority = Pipeline("flow_priority", on="test.flow_priority", queue=PRIORITY_QUEUE)
flow_priority.stage("first", retries=0, timeout=30)(_seq)
flow_priority.stage("second", retries=0, timeout=30)(_seq)


# --- Typed stages (tests/pipeline/test_in_process.py): the event's model in ctx.event.data, parents named
# by their functions.
@event_type("test.typed")
class TestTyped(BaseModel):
    order_id: int
    amount_cents: int = 100


typed = Pipeline("typed", on="test.typed")


@typed.stage(retries=0, timeout=30)
def reserve(ctx: StageContext[TestTyped]) -> dict:
    data = ctx.event.data
    return {"model": type(data).__name__, "order_id": data.order_id}


@typed.stage(after=[reserve], retries=0, timeout=30)
def bill(ctx: StageContext[TestTyped]) -> dict:
    return {"amount_cents": ctx.event.data.amount_cents}


@typed.stage(after=[reserve, bill], retries=0, timeout=30)
def confirm(ctx: StageContext[TestTyped]) -> dict:
    return {"parents": sorted(ctx.results)}


# --- Flow control: concurrency, fairness, singletons (tests/pipeline/test_flow_concurrency.py,
# tests/pipeline/test_flow_concurrency_on_broker.py), on the same queue of their own (FLOW_QUEUE): the
# tests that use it start their own worker (2 processes x 8 threads) on it.


@event_type("test.flow_order")
class TestFlowOrder(BaseModel):
    customer_id: int
    n: int = 0
    sleep: float = 0.0  # seconds each of the two stages takes
    fail: bool = False  # the second stage fails (no retries)
    held_for: float = 0.0  # when set, how long `pick`'s first attempt takes instead (a test kills it meanwhile)


one_per_customer = Pipeline("one_per_customer", on="test.flow_order", queue=FLOW_QUEUE,
                            concurrency=Concurrency(limit=1, key="customer_id"))


@one_per_customer.stage(retries=0, timeout=60)
def pick(ctx: StageContext) -> dict:
    payload = ctx.event.payload
    _sleep_for(payload["held_for"] if ctx.attempt == 1 and payload["held_for"] else payload["sleep"])
    return {"n": ctx.event.payload["n"]}


@one_per_customer.stage(retries=0, timeout=60)
def pack(ctx: StageContext) -> dict:
    _sleep_for(ctx.event.payload["sleep"])
    if ctx.event.payload["fail"]:
        raise RuntimeError("pack failed on purpose")
    return {"n": ctx.results["pick"]["n"]}


@event_type("test.flow_tenant")
class TestFlowTenant(BaseModel):
    tenant: str
    n: int = 0


# At most 2 runs in progress in all; the tenants take turns for them.
fair_tenants = Pipeline("fair_tenants", on="test.flow_tenant", queue=FLOW_QUEUE,
                        concurrency=Concurrency(limit=2, key="tenant", total=2))


@fair_tenants.stage(retries=0, timeout=30)
def serve_tenant(ctx: StageContext) -> dict:
    return {"n": ctx.event.payload["n"]}


@event_type("test.flow_single")
class TestFlowSingle(BaseModel):
    account: str
    n: int = 0
    hold: bool = False  # the stage waits (up to 60 s) until the switch "release_<account>" is on, or its run is cancelled


def _held(ctx: StageContext) -> dict:
    import time

    _record(ctx)
    deadline = time.monotonic() + 60
    while ctx.event.payload["hold"] and time.monotonic() < deadline:
        if ctx.cancelled or _switch_on(f"release_{ctx.event.payload['account']}"):
            break
        time.sleep(0.05)
    return {"n": ctx.event.payload["n"], "cancelled": ctx.cancelled}


sync_account = Pipeline("sync_account", on="test.flow_single", queue=FLOW_QUEUE,
                        singleton=Singleton(key="account", mode="skip"))
sync_account.stage("sync", retries=0, timeout=90)(_held)


@event_type("test.flow_latest")
class TestFlowLatest(TestFlowSingle):
    pass


reindex_account = Pipeline("reindex_account", on="test.flow_latest", queue=FLOW_QUEUE,
                           singleton=Singleton(key="account", mode="cancel"))
reindex_account.stage("reindex", retries=0, timeout=90)(_held)


@event_type("test.flow_stage")
class TestFlowStage(BaseModel):
    account: str
    n: int = 0
    sleep: float = 0.0  # seconds the limited stage takes


# Only its middle stage is limited: one call per account at a time (a rate-limited partner API).
limited_stage = Pipeline("limited_stage", on="test.flow_stage", queue=FLOW_QUEUE)


@limited_stage.stage(retries=0, timeout=30)
def prepare_call(ctx: StageContext) -> dict:
    return {"n": ctx.event.payload["n"]}


@limited_stage.stage(retries=2, backoff=(0.05, 0.1), timeout=30, concurrency=Concurrency(limit=1, key="account"))
def call_partner(ctx: StageContext) -> dict:
    _sleep_for(ctx.event.payload["sleep"])
    return {"n": ctx.results["prepare_call"]["n"]}


@limited_stage.stage(retries=0, timeout=30)
def after_call(ctx: StageContext) -> dict:
    return {"n": ctx.results["call_partner"]["n"]}


# A stage limited twice: two starts an hour per account (one plus a burst of one), one at a time.
@event_type("test.flow_paid")
class TestFlowPaid(BaseModel):
    account: str
    n: int = 0


paid_once = Pipeline("paid_once", on="test.flow_paid", queue=FLOW_QUEUE)


@paid_once.stage(retries=0, timeout=30)
def before_paid_call(ctx: StageContext) -> dict:
    return {"n": ctx.event.payload["n"]}


@paid_once.stage(retries=0, timeout=30, rate_limit=RateLimit(1, per=3600, key="account", burst=1),
                 concurrency=Concurrency(limit=1, key="account"))
def paid_call(ctx: StageContext) -> dict:
    return {"n": ctx.results["before_paid_call"]["n"]}
