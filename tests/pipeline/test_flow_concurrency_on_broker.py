"""Flow control against the real broker and real workers (2 processes x 8 threads, queue `flow`):
concurrency per key holds across processes, keys proceed in parallel, a killed worker's slot
comes back, the keys of a total take turns, singletons skip or cancel. Orders of events are
read from the store's stage start/end times, never from the clock of this test."""
from __future__ import annotations

import signal
from collections import defaultdict

import pytest
from django.db import transaction

from pipeline import emit
from pipeline.models import ConcurrencyCounter, ConcurrencySlot, ConcurrencyWaiter, Run, StageRun

from tests.conftest import SharedWorker, purge_queues, start_worker, wait_for
from tests.testapp.models import SideEffect, Switch
from tests.testapp.pipelines import FLOW_QUEUE

pytestmark = pytest.mark.broker

FINAL = ("succeeded", "failed", "cancelled", "skipped")


@pytest.fixture(scope="module")
def flow_worker(test_database_url):
    """One worker on queue `flow` for the module's tests (the kill test starts and kills its own):
    a `SharedWorker`, so each test's teardown waits for it to be idle before the test's data is
    flushed (tests/conftest.py), and nothing a test started is still running in the next one."""
    purge_queues(FLOW_QUEUE)
    shared = SharedWorker(test_database_url, "flow-worker", FLOW_QUEUE, processes=2, threads=8)
    yield shared
    shared.stop()


@pytest.fixture
def live_flow_worker(flow_worker, transactional_db):
    """The module's worker, running, its queue purged of earlier tests."""
    purge_queues(FLOW_QUEUE)
    return flow_worker.ensure_started()


def _run_id(event_id: str) -> str:
    return str(Run.objects.get(event_id=event_id).id)


def _all_final(run_ids: list[str]) -> bool:
    return Run.objects.filter(id__in=run_ids, status__in=FINAL).count() == len(run_ids)


def _spans(run_ids: list[str]) -> dict[str, tuple]:
    """Each run's span: its first stage's start to its last stage's end (from the store)."""
    spans: dict[str, list] = {}
    for run_id, started, finished in StageRun.objects.filter(run_id__in=run_ids).values_list(
            "run_id", "started_at", "finished_at"):
        span = spans.setdefault(str(run_id), [started, finished])
        span[0], span[1] = min(span[0], started), max(span[1], finished)
    return {k: tuple(v) for k, v in spans.items()}


def _overlapping(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_one_run_per_customer_at_a_time_while_customers_proceed_in_parallel(live_flow_worker):
    by_customer: dict[int, list[str]] = defaultdict(list)
    for n in range(40):
        customer = n % 4
        by_customer[customer].append(_run_id(emit("test.flow_order", {"customer_id": customer, "n": n, "sleep": 0.1})))
    run_ids = [r for runs in by_customer.values() for r in runs]
    wait_for(lambda: _all_final(run_ids), 240, "the 40 runs to end")
    assert set(Run.objects.filter(id__in=run_ids).values_list("status", flat=True)) == {"succeeded"}
    spans = _spans(run_ids)
    for customer, runs in by_customer.items():
        mine = [spans[r] for r in runs]
        overlaps = [(a, b) for i, a in enumerate(mine) for b in mine[i + 1:] if _overlapping(a, b)]
        assert not overlaps, f"customer {customer}: two runs in progress at once: {overlaps[:3]}"
        others = [spans[r] for c, rs in by_customer.items() if c != customer for r in rs]
        assert any(_overlapping(a, b) for a in mine for b in others), f"customer {customer} never ran beside another"
    assert not ConcurrencySlot.objects.exists() and not ConcurrencyWaiter.objects.exists()
    assert set(ConcurrencyCounter.objects.values_list("held", flat=True)) == {0}


def test_a_killed_workers_slot_comes_back_within_its_lease_and_nothing_is_lost(transactional_db, test_database_url,
                                                                              flow_worker):
    flow_worker.stop()  # the module's worker must not take this test's messages (the next test starts it again)
    purge_queues(FLOW_QUEUE)
    doomed = start_worker(test_database_url, "flow-doomed", processes=2, threads=8, queue=FLOW_QUEUE)
    try:
        held = _run_id(emit("test.flow_order", {"customer_id": 7, "held_for": 30}))
        after = [_run_id(emit("test.flow_order", {"customer_id": 7, "n": n})) for n in range(3)]
        wait_for(lambda: StageRun.objects.filter(run_id=held, stage="pick", status="running").exists(), 60,
                 "the first run's stage to start")
        lease_until = StageRun.objects.get(run_id=held, stage="pick").lease_until
        doomed.signal(signal.SIGKILL)  # both processes, mid-stage, holding the customer's slot
        doomed.popen.wait(10)
    finally:
        doomed.stop()
    assert [Run.objects.get(id=r).status for r in after] == ["waiting"] * 3
    survivor = start_worker(test_database_url, "flow-survivor", processes=2, threads=8, queue=FLOW_QUEUE)
    try:
        wait_for(lambda: _all_final([held, *after]), 240, "the held run and those waiting behind it to end")
    finally:
        survivor.stop()
    assert [Run.objects.get(id=r).status for r in [held, *after]] == ["succeeded"] * 4
    spans = _spans([held, *after])
    # The slot came back within the lease of the stage that held it: the next run started before it ran out.
    assert min(spans[r][0] for r in after) <= lease_until
    ordered = sorted(spans.values())
    assert not any(_overlapping(a, b) for a, b in zip(ordered, ordered[1:]))
    assert not ConcurrencySlot.objects.exists()


def test_a_key_with_a_thousand_runs_waiting_does_not_hold_back_another_keys_runs(live_flow_worker):
    with transaction.atomic():  # all waiting before the first starts
        a = [emit("test.flow_tenant", {"tenant": "a", "n": n}) for n in range(1000)]
        b = [emit("test.flow_tenant", {"tenant": "b", "n": n}) for n in range(10)]
    a_runs = [str(r) for r in Run.objects.filter(event_id__in=a).values_list("id", flat=True)]
    b_runs = [str(r) for r in Run.objects.filter(event_id__in=b).values_list("id", flat=True)]
    wait_for(lambda: _all_final(a_runs + b_runs), 600, "the 1,010 runs to end")
    assert set(Run.objects.filter(id__in=a_runs + b_runs).values_list("status", flat=True)) == {"succeeded"}
    a_ends = sorted(Run.objects.filter(id__in=a_runs).values_list("finished_at", flat=True))
    b_last = max(Run.objects.filter(id__in=b_runs).values_list("finished_at", flat=True))
    assert b_last < a_ends[199], "b's 10 runs should all end before a's 200th"
    assert set(ConcurrencyCounter.objects.values_list("held", flat=True)) == {0}


def test_a_singleton_skips_a_start_while_its_key_runs(live_flow_worker):
    first = _run_id(emit("test.flow_single", {"account": "x", "hold": True}))
    wait_for(lambda: SideEffect.objects.filter(run_id=first).exists(), 60, "the first run's stage to start")
    second = _run_id(emit("test.flow_single", {"account": "x", "n": 2}))
    other = _run_id(emit("test.flow_single", {"account": "y", "n": 3}))
    assert Run.objects.get(id=second).status == "skipped"
    wait_for(lambda: _all_final([other]), 60, "another account's run to end")
    Switch.objects.create(name="release_x")
    wait_for(lambda: _all_final([first]), 90, "the first run to end")
    assert [Run.objects.get(id=r).status for r in (first, second, other)] == ["succeeded", "skipped", "succeeded"]
    assert not SideEffect.objects.filter(run_id=second).exists()


def test_a_singleton_in_cancel_mode_cancels_the_run_in_progress(live_flow_worker):
    first = _run_id(emit("test.flow_latest", {"account": "x", "hold": True}))
    wait_for(lambda: SideEffect.objects.filter(run_id=first).exists(), 60, "the first run's stage to start")
    second = _run_id(emit("test.flow_latest", {"account": "x", "n": 2}))
    wait_for(lambda: _all_final([first, second]), 90, "both runs to end")
    assert [Run.objects.get(id=r).status for r in (first, second)] == ["cancelled", "succeeded"]
    wait_for(lambda: StageRun.objects.filter(run_id=first, status="succeeded").exists(), 90,
             "the cancelled run's stage to notice and stop")
    assert StageRun.objects.get(run_id=first).result == {"n": 0, "cancelled": True}


def test_a_stage_with_its_own_limit_never_runs_twice_at_once_for_a_key(live_flow_worker):
    runs = [_run_id(emit("test.flow_stage", {"account": "acme", "n": n, "sleep": 0.1})) for n in range(12)]
    others = [_run_id(emit("test.flow_stage", {"account": "other", "n": n, "sleep": 0.1})) for n in range(4)]
    wait_for(lambda: _all_final(runs + others), 240, "the 16 runs to end")
    assert set(Run.objects.filter(id__in=runs + others).values_list("status", flat=True)) == {"succeeded"}
    calls = sorted(StageRun.objects.filter(run_id__in=runs, stage="call_partner").values_list(
        "started_at", "finished_at"))
    assert not any(_overlapping(a, b) for a, b in zip(calls, calls[1:])), "two calls for one account at once"
    assert not ConcurrencySlot.objects.exists() and not ConcurrencyWaiter.objects.exists()
