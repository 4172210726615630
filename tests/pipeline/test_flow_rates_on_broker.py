"""Rate limits, debounce, batching and priority on the real broker, with 2 worker processes x 8
threads (`rundramatiq`), against the run store.

What load can and cannot change here (the machine is a busy 2-core one):
- rate limit: the limiter admits a start under its row lock and records that moment as the
  stage's `started_at`; the assertion is on those recorded starts, so a slow machine only
  spreads them further apart (easier to meet), it cannot crowd them;
- debounce: windows are measured on the events' `occurred_at`, not on when a worker sees them;
  the burst's one-run outcome needs only that consecutive events are under 2 s apart (checked
  from the recorded times, not assumed), and the steady stream's 2-or-3 needs windows of at
  most 5 s of event time over a 12 s stream, whatever the workers' lag;
- batching closes batches by size only (the time limit is 10 minutes);
- priority compares the order in which runs finished, not durations."""
import time
from datetime import timedelta

import pytest

from pipeline import emit
from pipeline.models import Event, Run, StageRun
from tests.conftest import purge_queues, read_log_lines, start_worker, wait_for
from tests.testapp.pipelines import FLOW_QUEUE, PRIORITY_QUEUE

pytestmark = pytest.mark.broker

FINAL = ["succeeded", "failed", "cancelled", "debounced", "batched"]


@pytest.fixture(scope="module")
def flow_worker(test_database_url):
    purge_queues(FLOW_QUEUE, f"{FLOW_QUEUE}.urgent")
    process = start_worker(test_database_url, "flow-worker", processes=2, threads=8, queue=FLOW_QUEUE, own_log=True)
    yield process
    process.stop()


@pytest.fixture
def live_flow_worker(flow_worker, transactional_db):
    purge_queues(FLOW_QUEUE, f"{FLOW_QUEUE}.urgent")
    return flow_worker


def all_final(pipeline: str, count: int, timeout: float) -> list[Run]:
    def done():
        runs = list(Run.objects.filter(pipeline=pipeline, status__in=FINAL))
        return runs if len(runs) == count else None

    return wait_for(done, timeout, f"{count} runs of {pipeline} to end")


def test_a_global_rate_limit_holds_across_every_worker_and_every_throttled_run_completes(live_flow_worker):
    for i in range(100):
        emit("test.flow_throttle", {"seq": i})
    runs = all_final("flow_throttled", 100, 300)
    assert {r.status for r in runs} == {"succeeded"}, [r.error for r in runs if r.status != "succeeded"][:3]
    starts = sorted(StageRun.objects.filter(run__pipeline="flow_throttled", stage="call_api")
                    .values_list("started_at", flat=True))
    most = 10 + 2  # RateLimit(10, per=1.0, burst=2)
    crowded = [(starts[i], starts[i + most]) for i in range(len(starts) - most)
               if starts[i + most] - starts[i] < timedelta(seconds=1)]
    assert len(starts) == 100 and not crowded, f"{len(crowded)} one-second windows with more than {most} starts"
    waits = [line for line in read_log_lines("flow-worker*.jsonl")
             if line.get("event") == "flow.waiting" and line.get("rule") == "throttle"
             and line.get("pipeline") == "flow_throttled"]
    assert waits and all(line.get("run_id") and line.get("trace_id") and line.get("key") == "*" for line in waits)


def test_a_rate_limit_in_drop_mode_cancels_the_excess_runs_and_says_why(live_flow_worker):
    """RateLimit(1, per=600, burst=1): two start at once, then one per 600 s: of five, three dropped."""
    for i in range(5):
        emit("test.flow_drop", {"key": "a", "seq": i})
    emit("test.flow_drop", {"key": "b", "seq": 9})
    runs = all_final("flow_dropped", 6, 120)
    by_key = {}
    for run in runs:
        by_key.setdefault(run.event.payload["key"], []).append(run)
    assert sorted(r.status for r in by_key["a"]) == ["cancelled"] * 3 + ["succeeded"] * 2
    assert [r.status for r in by_key["b"]] == ["succeeded"]  # a key of its own
    assert all("dropped by rate limit (1 per 600 s, key a)" in r.error for r in by_key["a"] if r.status == "cancelled")


def test_fifty_events_of_one_key_in_a_burst_make_one_run_with_the_last_payload(live_flow_worker):
    ids = [emit("test.flow_debounce_burst", {"key": "burst", "seq": i}) for i in range(1, 51)]
    other = emit("test.flow_debounce_burst", {"key": "other", "seq": 99})  # another key: its own run
    times = [Event.objects.get(id=i).occurred_at for i in ids]
    assert max(b - a for a, b in zip(times, times[1:])) < timedelta(seconds=2)  # the premise: one window
    runs = all_final("flow_debounced_burst", 51, 120)
    ran = [r for r in runs if r.status == "succeeded"]
    assert sorted(str(r.event_id) for r in ran) == sorted([ids[-1], other])
    carried = next(r for r in ran if str(r.event_id) == ids[-1])
    assert StageRun.objects.get(run=carried).result == {"seq": 50}
    assert sum(r.status == "debounced" for r in runs) == 49
    debounced = {str(r.id): r for r in runs if r.status == "debounced"}

    def dropped_lines():  # each is written after its admission commits: wait for every run's own line
        lines = [line for line in read_log_lines("flow-worker*.jsonl")
                 if line.get("event") == "flow.dropped" and line.get("key") == "burst" and line.get("run_id") in debounced]
        return lines if {line["run_id"] for line in lines} == set(debounced) else None

    dropped = wait_for(dropped_lines, 30, "a flow.dropped line for every debounced run")
    assert {line["run_id"] for line in dropped} == set(debounced)  # one line for each, with its own ids
    assert all(line["rule"] == "debounce" and line["event_id"] == str(debounced[line["run_id"]].event_id)
               and line["trace_id"] and line["superseded_by"] for line in dropped)


def test_a_steady_stream_still_runs_every_max_wait(live_flow_worker):
    start = time.monotonic()
    count = 0
    while time.monotonic() - start < 12:  # the stream: one event every 0.25 s for 12 s
        count += 1
        emit("test.flow_debounce", {"key": "stream", "seq": count})
        time.sleep(0.25)
    runs = all_final("flow_debounced", count, 120)
    ran = sorted((r for r in runs if r.status == "succeeded"), key=lambda r: r.created_at)
    assert 2 <= len(ran) <= 3, [(r.created_at, r.status) for r in ran]
    assert StageRun.objects.get(run=ran[-1]).result == {"seq": count}  # the last window ran its last event


def test_a_hundred_events_run_as_four_batches_of_twenty_five(live_flow_worker):
    ids = [emit("test.flow_batch", {"key": "b", "seq": i}) for i in range(100)]
    runs = all_final("flow_batched", 100, 120)
    ran = [r for r in runs if r.status == "succeeded"]
    assert len(ran) == 4 and sum(r.status == "batched" for r in runs) == 96
    results = [StageRun.objects.get(run=r).result for r in ran]
    assert sorted(len(r["seqs"]) for r in results) == [25] * 4
    assert sorted(e for r in results for e in r["events"]) == sorted(ids)


def test_urgent_runs_overtake_two_thousand_queued_normal_ones(transactional_db, test_database_url):
    """Everything is queued before the worker starts; the urgent runs were emitted last. Each worker
    process may have prefetched 2 x 8 normal messages before it sees the urgent queue: that, and
    not 2,000, is what urgent runs can wait behind."""
    purge_queues(PRIORITY_QUEUE, f"{PRIORITY_QUEUE}.urgent")
    normal = [emit("test.flow_priority", {"seq": i}) for i in range(2000)]
    urgent = [emit("test.flow_priority", {"seq": 10_000 + i}, priority="urgent") for i in range(20)]
    process = start_worker(test_database_url, "flow-priority-worker", processes=2, threads=8, queue=PRIORITY_QUEUE,
                           own_log=True)
    try:
        all_final("flow_priority", 2020, 600)
    finally:
        process.stop()
    finished = {str(e): f for e, f in Run.objects.filter(pipeline="flow_priority").values_list("event_id", "finished_at")}
    normal_done = sorted(finished[e] for e in normal)
    last_urgent = max(finished[e] for e in urgent)
    overtaken = sum(t < last_urgent for t in normal_done)
    assert last_urgent < normal_done[199], f"the last urgent run finished after {overtaken} normal ones"
