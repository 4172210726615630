"""Flow control's logic, in-process (no broker): declarations checked at import, slots taken and
given back exactly once (a run's end, failure, cancellation, replay), the waiting list in order
per key and round-robin across keys for a total, singletons that skip or cancel, the relay's
repair. Stage messages are captured instead of published; stages run on this thread."""
from __future__ import annotations

import pytest
import structlog
from pydantic import BaseModel

from pipeline import Concurrency, DefinitionError, OperationRefused, Pipeline, Singleton, cancel, emit, relay_once, replay, wait_reason
from pipeline._definitions import registry
from pipeline.flow import check_key, key_of
from pipeline.models import ConcurrencyCounter, ConcurrencySlot, ConcurrencyWaiter, Run

pytestmark = pytest.mark.django_db


# --- declarations -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: Concurrency(limit=0, key="customer_id"), "limit must be an integer >= 1"),
    (lambda: Concurrency(limit="2"), "limit must be an integer >= 1"),
    (lambda: Concurrency(limit=1, key="customer_id", total=0), "total must be an integer >= 1"),
    (lambda: Concurrency(limit=1, total=4), "needs a key"),
    (lambda: Singleton(key="customer_id", mode="replace"), "mode must be one of skip, cancel"),
])
def test_a_limit_below_one_or_an_unknown_mode_is_refused_where_declared(make, message):
    with pytest.raises(DefinitionError, match=message):
        make()


def test_concurrency_and_singleton_on_one_pipeline_are_refused(restore_registry):
    with pytest.raises(DefinitionError, match="not both"):
        Pipeline("flow_both", concurrency=Concurrency(limit=1), singleton=Singleton())


def test_a_key_naming_no_field_of_the_event_schema_fails_validation(restore_registry):
    p = Pipeline("flow_bad_key", on="test.flow_order", concurrency=Concurrency(limit=1, key="customer"))
    p.stage("only")(lambda ctx: None)
    with pytest.raises(DefinitionError, match=r"pipeline 'flow_bad_key' concurrency: key 'customer': "
                                              r"'customer' is not a field of TestFlowOrder"):
        registry.validate()


class _Customer(BaseModel):
    id: int


class _Order(BaseModel):
    customer: _Customer | None = None
    note: dict = {}


def test_keys_are_dotted_paths_checked_as_deep_as_the_schema_goes():
    check_key("customer.id", _Order, "here")
    check_key("note.anything", _Order, "here")  # a dict: not checked below
    with pytest.raises(DefinitionError, match="here: key 'customer.name': 'name' is not a field of _Customer"):
        check_key("customer.name", _Order, "here")
    with pytest.raises(DefinitionError, match="must be a dotted path"):
        check_key("customer..id", _Order, "here")
    assert key_of("customer.id", {"customer": {"id": 7}}) == "7"
    assert key_of("customer.id", {"customer": None}) == ""
    assert key_of(None, {"customer": {"id": 7}}) == "*"
    assert key_of("tenant", {"tenant": "acme"}) == "acme"


# --- driving runs in-process ----------------------------------------------------------------------
carried_by: dict = {}  # (stage, run id) -> what its last captured message carried


@pytest.fixture
def published(monkeypatch):
    """Stage messages, captured in order as (stage, run id) instead of going to the broker."""
    from pipeline import _publisher as publisher

    sent: list = []

    def capture(stage, *, run_id, event_id, trace_id, delay_ms=None, carried=None):
        sent.append((stage, run_id))
        carried_by[(stage.name, run_id)] = dict(carried or {})
        return "captured"

    monkeypatch.setattr(publisher, "enqueue_stage", capture)
    return sent


@pytest.fixture
def flow(published, django_capture_on_commit_callbacks):
    """emit / run a run's published stages, with on-commit callbacks (publishing) executed."""
    from pipeline import _runtime as runtime

    class Flow:
        def emit(self, type_: str, **payload) -> str:
            with django_capture_on_commit_callbacks(execute=True):
                event_id = emit(type_, payload)
            return str(Run.objects.get(event_id=event_id).id)

        def run(self, run_id: str) -> None:
            """Executes the stage messages published for `run_id` until none is left."""
            while True:
                mine = [item for item in published if item[1] == run_id]
                if not mine:
                    return
                for item in mine:
                    published.remove(item)
                    with django_capture_on_commit_callbacks(execute=True):
                        runtime.execute_stage(item[0], run_id)

        def published_stages(self, run_id: str) -> list[str]:
            return [stage.name for stage, r in published if r == run_id]

        def published_runs(self) -> list[str]:
            return [run_id for _, run_id in published]

        def do(self, fn, *args, **kwargs):
            with django_capture_on_commit_callbacks(execute=True):
                return fn(*args, **kwargs)

    return Flow()


def _status(run_id: str) -> str:
    return Run.objects.get(id=run_id).status


def _held(pipeline: str, key: str, rule: str = "concurrency") -> int:
    row = ConcurrencyCounter.objects.filter(pipeline=pipeline, rule=rule, key=key).first()
    return row.held if row else 0


def test_runs_over_the_limit_of_their_key_wait_without_a_message_and_others_keys_start(flow):
    with structlog.testing.capture_logs() as logs:
        a1, a2, a3 = (flow.emit("test.flow_order", customer_id=1, n=n) for n in range(3))
        b1 = flow.emit("test.flow_order", customer_id=2)
    assert [_status(r) for r in (a1, a2, a3, b1)] == ["pending", "waiting", "waiting", "pending"]
    assert sorted(flow.published_runs()) == sorted([a1, b1])  # nothing published for a waiting run
    assert _held("one_per_customer", "1") == 1 and _held("one_per_customer", "2") == 1
    waiting = [line for line in logs if line["event"] == "flow.waiting"]
    assert [(w["run_id"], w["rule"], w["key"], w["pipeline"]) for w in waiting] == [
        (a2, "concurrency", "1", "one_per_customer"), (a3, "concurrency", "1", "one_per_customer")]
    assert all(w["event_id"] and w["trace_id"] for w in waiting)
    reason = wait_reason(a3)
    assert reason["key"] == "1" and reason["limit"] == 1 and reason["in_progress"] == [a1] and reason["ahead"] == 1


def test_a_runs_end_hands_its_slot_to_the_oldest_waiting_run_of_its_key(flow):
    a1, a2, a3 = (flow.emit("test.flow_order", customer_id=1, n=n) for n in range(3))
    with structlog.testing.capture_logs() as logs:
        flow.run(a1)
    assert [_status(r) for r in (a1, a2, a3)] == ["succeeded", "pending", "waiting"]
    released = [line for line in logs if line["event"] == "flow.released"]
    assert [(r["run_id"], r["released_by"], r["key"], r["stages"]) for r in released] == [(a2, a1, "1", ["pick"])]
    flow.run(a2)
    flow.run(a3)
    assert [_status(r) for r in (a1, a2, a3)] == ["succeeded"] * 3
    assert _held("one_per_customer", "1") == 0
    assert not ConcurrencySlot.objects.exists() and not ConcurrencyWaiter.objects.exists()


def test_a_failed_run_gives_its_slot_back(flow):
    a1 = flow.emit("test.flow_order", customer_id=1, fail=True)
    a2 = flow.emit("test.flow_order", customer_id=1)
    flow.run(a1)
    assert (_status(a1), _status(a2)) == ("failed", "pending")
    assert list(ConcurrencySlot.objects.values_list("run_id", flat=True)) == [Run.objects.get(id=a2).id]


def test_cancelling_the_holder_hands_its_slot_on_and_cancelling_a_waiting_run_takes_it_off_the_list(flow):
    a1, a2, a3 = (flow.emit("test.flow_order", customer_id=1, n=n) for n in range(3))
    flow.do(cancel, a2)  # waiting
    assert _status(a2) == "cancelled" and wait_reason(a2) is None
    assert flow.published_runs() == [a1]
    flow.do(cancel, a1)  # holding the slot: the next one in line gets it
    assert (_status(a1), _status(a3)) == ("cancelled", "pending")
    assert flow.published_runs() == [a1, a3]
    assert _held("one_per_customer", "1") == 1


def test_a_replayed_run_waits_for_a_slot_like_a_new_one_and_resumes_where_it_stopped(flow):
    a1 = flow.emit("test.flow_order", customer_id=1, fail=True)
    flow.run(a1)
    a2 = flow.emit("test.flow_order", customer_id=1, sleep=0)
    assert _status(a2) == "pending"
    flow.do(replay, a1)
    assert _status(a1) == "waiting" and wait_reason(a1)["in_progress"] == [a2]
    flow.run(a2)
    assert _status(a1) == "running"  # admitted: it had started before, so it is running again
    assert flow.published_stages(a1) == ["pack"]  # from the stage that failed
    flow.run(a1)
    assert _status(a1) == "failed"  # it fails again (fail=True): and gives its slot back again
    assert _held("one_per_customer", "1") == 0


def test_a_replay_from_the_start_waits_for_a_slot_too_and_a_busy_singleton_refuses_a_replay(flow):
    a1 = flow.emit("test.flow_order", customer_id=5, fail=True)
    flow.run(a1)
    a2 = flow.emit("test.flow_order", customer_id=5)
    new = flow.do(replay, a1, from_start=True)
    assert _status(new) == "waiting" and new not in flow.published_runs()
    flow.run(a2)
    assert _status(new) == "pending" and flow.published_stages(new) == ["pick"]

    s1 = flow.emit("test.flow_single", account="z")
    flow.do(cancel, s1)
    s2 = flow.emit("test.flow_single", account="z")
    with pytest.raises(OperationRefused, match="singleton key 'z' is in progress"):
        flow.do(replay, s1)
    assert (_status(s1), _status(s2)) == ("cancelled", "pending")


def test_a_stale_message_of_a_waiting_run_is_dropped_not_cancelling_its_stage(flow, published):
    from pipeline import _runtime as runtime

    a1 = flow.emit("test.flow_order", customer_id=6)
    a2 = flow.emit("test.flow_order", customer_id=6)
    stage = registry.get("one_per_customer").stages["pick"]
    flow.do(runtime.execute_stage, stage, a2)  # a message for it, though it waits (a replay's leftover)
    assert _status(a2) == "waiting"
    assert Run.objects.get(id=a2).stages.get(stage="pick").status == "pending"
    flow.run(a1)
    assert _status(a2) == "pending" and flow.published_stages(a2) == ["pick"]


def test_a_total_is_shared_by_the_keys_in_turn(flow):
    a = [flow.emit("test.flow_tenant", tenant="a", n=n) for n in range(6)]
    b = [flow.emit("test.flow_tenant", tenant="b", n=n) for n in range(2)]
    assert [_status(r) for r in a[:2]] == ["pending", "pending"]
    assert all(_status(r) == "waiting" for r in a[2:] + b)
    with structlog.testing.capture_logs() as logs:
        for _ in range(8):
            flow.run(next(r for r in a + b if _status(r) == "pending"))
    admitted = [line["run_id"] for line in logs if line["event"] == "flow.released"]
    # Once a's first two hold the total, every freed slot goes to the other tenant in turn.
    assert admitted == [a[2], b[0], a[3], b[1], a[4], a[5]]
    assert all(_status(r) == "succeeded" for r in a + b)
    assert _held("fair_tenants", "*", rule="concurrency_total") == 0


def test_a_singleton_start_while_its_key_is_busy_is_skipped_and_said(flow):
    s1 = flow.emit("test.flow_single", account="x")
    with structlog.testing.capture_logs() as logs:
        s2 = flow.emit("test.flow_single", account="x")
    s3 = flow.emit("test.flow_single", account="y")
    assert [_status(r) for r in (s1, s2, s3)] == ["pending", "skipped", "pending"]
    assert Run.objects.get(id=s2).finished_at is not None and not Run.objects.get(id=s2).stages.exists()
    (dropped,) = [line for line in logs if line["event"] == "flow.dropped"]
    assert (dropped["rule"], dropped["key"], dropped["run_id"], dropped["outcome"]) == ("singleton", "x", s2, "skipped")
    flow.run(s1)
    s4 = flow.emit("test.flow_single", account="x")
    assert _status(s4) == "pending"  # the key is free again


def test_a_singleton_in_cancel_mode_cancels_the_run_in_progress_and_takes_its_slot(flow):
    r1 = flow.emit("test.flow_latest", account="x")
    with structlog.testing.capture_logs() as logs:
        r2 = flow.emit("test.flow_latest", account="x")
    assert (_status(r1), _status(r2)) == ("cancelled", "pending")
    assert list(ConcurrencySlot.objects.values_list("run_id", flat=True)) == [Run.objects.get(id=r2).id]
    assert {(line["event"], line["run_id"]) for line in logs if line["event"] in ("flow.dropped", "run.cancelled")} \
        == {("flow.dropped", r1), ("run.cancelled", r1)}
    flow.run(r1)  # its message still comes: the stage does not start
    flow.run(r2)
    assert (_status(r1), _status(r2)) == ("cancelled", "succeeded")
    assert _held("reindex_account", "x", rule="singleton") == 0


def test_the_relay_gives_back_a_slot_whose_run_is_gone(flow):
    a1, a2 = (flow.emit("test.flow_order", customer_id=1, n=n) for n in range(2))
    Run.objects.filter(id=a1).delete()  # by hand: no end, no release
    with structlog.testing.capture_logs() as logs:
        flow.do(relay_once)
    assert _status(a2) == "pending"
    assert a2 in flow.published_runs()
    assert any(line["event"] == "flow.slot_repaired" for line in logs)
    assert _held("one_per_customer", "1") == 1


def test_the_api_filters_waiting_runs_and_says_why_one_waits(flow, client, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    a1, a2 = (flow.emit("test.flow_order", customer_id=3, n=n) for n in range(2))
    listed = client.get("/api/runs?status=waiting", **auth).json()
    assert [r["run_id"] for r in listed["runs"]] == [a2]
    detail = client.get(f"/api/runs/{a2}", **auth).json()
    assert detail["status"] == "waiting"
    assert {k: detail["waiting_for"][k] for k in ("rule", "key", "key_field", "limit", "in_progress", "ahead")} == {
        "rule": "concurrency", "key": "3", "key_field": "customer_id", "limit": 1, "in_progress": [a1], "ahead": 0}
    assert client.get(f"/api/runs/{a1}", **auth).json()["waiting_for"] is None


def test_the_dashboard_shows_why_a_run_waits(flow, admin_client):
    a1, a2 = (flow.emit("test.flow_order", customer_id=4, n=n) for n in range(2))
    page = admin_client.get(f"/dashboard/runs/{a2}/").content.decode()
    assert 'id="run-waiting"' in page and "customer_id</span> = <span class=\"mono\">4</span>" in page
    assert f"/dashboard/runs/{a1}/" in page  # the run holding the slot, linked
    assert 'id="cancel"' in page  # a waiting run can be cancelled
    assert a2 in admin_client.get("/dashboard/runs/?status=waiting").content.decode()


# --- a stage's own limit --------------------------------------------------------------------------
def _while_running(stage, during):
    """Makes `stage` call `during()` in the middle of its execution (restored by the caller)."""
    original = stage.fn

    def fn(ctx):
        during()
        return original(ctx)

    object.__setattr__(stage, "fn", fn)
    return original


def test_a_stage_over_its_own_limit_waits_without_its_message_and_runs_when_the_slot_is_free(flow, published):
    from pipeline import _runtime as runtime

    stage = registry.get("limited_stage").stages["call_partner"]
    a1 = flow.emit("test.flow_stage", account="p", n=1)
    a2 = flow.emit("test.flow_stage", account="p", n=2)
    for run_id in (a1, a2):  # their first stages; call_partner is published, never run inline
        item = next(i for i in published if i[1] == run_id)
        published.remove(item)
        flow.do(runtime.execute_stage, item[0], run_id)
    assert flow.published_stages(a1) == ["call_partner"] and flow.published_stages(a2) == ["call_partner"]
    published.clear()

    def a2_arrives():  # a2's call_partner message comes while a1's runs
        with structlog.testing.capture_logs() as logs:
            runtime.execute_stage(stage, a2)
        assert Run.objects.get(id=a2).stages.get(stage="call_partner").status == "waiting"
        (waiting,) = [line for line in logs if line["event"] == "flow.waiting"]
        assert (waiting["stage"], waiting["key"], waiting["run_id"]) == ("call_partner", "p", a2)
        assert wait_reason(a2)["stage"] == "call_partner" and wait_reason(a2)["in_progress"] == [a1]

    original = _while_running(stage, a2_arrives)
    try:
        flow.do(runtime.execute_stage, stage, a1)
    finally:
        object.__setattr__(stage, "fn", original)
    # a1's call_partner gave its slot to a2's, which is published again; a1 goes on
    assert Run.objects.get(id=a2).stages.get(stage="call_partner").status == "pending"
    assert sorted(flow.published_stages(a2)) == ["call_partner"]
    assert _status(a1) == "succeeded"  # after_call (no limit of its own) went on inline
    flow.run(a2)
    assert (_status(a1), _status(a2)) == ("succeeded", "succeeded")
    assert _held("limited_stage", "p", rule="stage:call_partner") == 0
    assert not ConcurrencySlot.objects.exists() and not ConcurrencyWaiter.objects.exists()


def test_cancelling_a_run_whose_stage_waits_takes_the_stage_off_the_list(flow, published):
    from pipeline import _runtime as runtime
    from pipeline.models import StageRun

    stage = registry.get("limited_stage").stages["call_partner"]
    a1 = flow.emit("test.flow_stage", account="q")
    a2 = flow.emit("test.flow_stage", account="q")
    flow.run(a1)
    original = _while_running(stage, lambda: (runtime.execute_stage(stage, a2), cancel(a2)))
    try:
        for run_id in (a2,):
            item = next(i for i in published if i[1] == run_id)
            published.remove(item)
            flow.do(runtime.execute_stage, item[0], run_id)  # prepare_call; call_partner published
        published.clear()
        # Hold a slot for a third run's call_partner while a2's arrives and a2 is cancelled.
        a3 = flow.emit("test.flow_stage", account="q")
        item = next(i for i in published if i[1] == a3)
        published.remove(item)
        flow.do(runtime.execute_stage, item[0], a3)
        published.clear()
        flow.do(runtime.execute_stage, stage, a3)
    finally:
        object.__setattr__(stage, "fn", original)
    assert _status(a2) == "cancelled"
    assert StageRun.objects.get(run_id=a2, stage="call_partner").status == "cancelled"
    assert not ConcurrencyWaiter.objects.filter(run_id=a2).exists()
    flow.run(a3)
    assert _status(a3) == "succeeded" and _held("limited_stage", "q", rule="stage:call_partner") == 0


def test_a_stage_that_waited_for_its_slot_does_not_pay_its_rate_limit_again(flow, published):
    """Two starts an hour per account, one at a time: a2's stage pays the second start, then waits for
    a1's slot; handed the slot, it runs at once (a third payment would throttle it for an hour)."""
    from dramatiq.middleware import CurrentMessage

    from pipeline import _runtime as runtime

    stage = registry.get("paid_once").stages["paid_call"]
    a1 = flow.emit("test.flow_paid", account="p", n=1)
    a2 = flow.emit("test.flow_paid", account="p", n=2)
    for run_id in (a1, a2):
        item = next(i for i in published if i[1] == run_id)
        published.remove(item)
        flow.do(runtime.execute_stage, item[0], run_id)
    published.clear()

    def a2_arrives():
        runtime.execute_stage(stage, a2)
        assert Run.objects.get(id=a2).stages.get(stage="paid_call").status == "waiting"

    original = _while_running(stage, a2_arrives)
    try:
        flow.do(runtime.execute_stage, stage, a1)
    finally:
        object.__setattr__(stage, "fn", original)
    assert flow.published_stages(a2) == ["paid_call"] and _status(a1) == "succeeded"
    published.clear()
    message = stage.actor.message_with_options(args=(a2,), **carried_by[("paid_call", a2)])
    current = CurrentMessage._MESSAGE.set(message)
    try:
        flow.do(runtime.execute_stage, stage, a2)
    finally:
        CurrentMessage._MESSAGE.reset(current)
    assert Run.objects.get(id=a2).stages.get(stage="paid_call").status == "succeeded"
    assert _status(a2) == "succeeded" and published == []
