"""The decisions of rate limits and debounce/batch windows, in process against the run store,
on a clock of the test's own (each decision reads the time once, under the row lock)."""
import random
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import structlog

from pipeline import Batch, Debounce, RateLimit
from pipeline.flow import _rate as rate, _windows as windows
from pipeline.models import Event, FlowBatchItem, FlowWindow, Run, StageRun

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def clock(monkeypatch):
    state = {"now": T0}
    monkeypatch.setattr(rate, "utcnow", lambda: state["now"])
    monkeypatch.setattr(windows, "utcnow", lambda: state["now"])
    return state


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_quiet_limit_admits_its_burst_at_once_then_hands_out_turns_one_interval_apart(db, clock):
    rule = RateLimit(10, per=1.0, burst=2)
    admitted = [rate.acquire("r", "*", rule) for _ in range(3)]
    assert all(d.admitted for d in admitted)
    refused = [rate.acquire("r", "*", rule) for _ in range(3)]
    assert [d.admitted for d in refused] == [False, False, False]
    assert [d.retry_at for d in refused] == [at(0.1), at(0.2), at(0.3)]  # turns, spread one T apart
    clock["now"] = at(0.1)
    assert rate.acquire("r", "*", rule).admitted  # at its turn
    clock["now"] = at(0.15)
    assert rate.acquire("r", "*", rule).retry_at == at(0.4)  # too early for the next: the end of the line


def test_no_window_of_the_period_holds_more_than_limit_plus_burst_starts(db, clock):
    """Random arrivals, each refused one coming back at its turn: the admitted times never put
    more than limit + burst starts in any window of `per` seconds."""
    rule = RateLimit(5, per=1.0, burst=1)
    rng = random.Random(7)
    pending = sorted(rng.uniform(0, 6) for _ in range(80))
    queue = list(pending)
    starts = []
    while queue:
        queue.sort()
        t = queue.pop(0)
        clock["now"] = max(clock["now"], at(t))
        decision = rate.acquire("w", "*", rule)
        if decision.admitted:
            starts.append(decision.now)
        else:
            queue.append((decision.retry_at - T0).total_seconds() + rng.uniform(0, 0.05))  # late by up to 50 ms
    assert len(starts) == 80
    n = rule.limit + rule.burst
    assert all(starts[i + n] - starts[i] >= timedelta(seconds=rule.per) for i in range(len(starts) - n))


def test_keys_have_limits_of_their_own_and_drop_mode_gives_no_turn(db, clock):
    rule = RateLimit(1, per=60, mode="drop")
    assert rate.acquire("d", "a", rule).admitted
    assert rate.acquire("d", "b", rule).admitted
    refused = rate.acquire("d", "a", rule)
    assert not refused.admitted and refused.retry_at is None


def _run(pipeline: str, occurred: datetime, payload: dict | None = None) -> tuple[str, str]:
    event = Event.objects.create(type="test.flow_debounce", payload=payload or {}, occurred_at=occurred,
                                 trace_id="0" * 32)
    run = Run.objects.create(event=event, pipeline=pipeline, created_at=occurred)
    StageRun.objects.create(run=run, stage="only")
    return str(run.id), str(event.id)


def test_debounce_keeps_the_newest_event_and_ends_the_others_debounced(db, clock):
    p = SimpleNamespace(name="flow_logic_debounce", debounce=Debounce(2, key="k", max_wait=5), batch=None)
    runs = [_run(p.name, at(i * 0.1)) for i in range(3)]
    clock["now"] = at(0.3)
    got = [windows.admit(p, "debounce", r, e, at(i * 0.1), "k1", held=False) for i, (r, e) in enumerate(runs)]
    assert [g.proceed for g in got] == [False, False, False]
    assert got[2].due_in_ms == 1900 + 1  # due 2 s after the newest event (0.2 + 2), seen at 0.3
    statuses = {str(r.id): r.status for r in Run.objects.all()}
    assert [statuses[r] for r, _ in runs] == ["debounced", "debounced", "pending"]
    assert Run.objects.get(id=runs[0][0]).error.endswith(runs[1][0])
    clock["now"] = at(2.3)
    leader = windows.admit(p, "debounce", runs[2][0], runs[2][1], at(0.2), "k1", held=True)
    assert leader.proceed and not FlowWindow.objects.exists()
    stale = windows.admit(p, "debounce", runs[0][0], runs[0][1], at(0), "k1", held=True)  # a folded run's message
    assert stale.gone and not stale.proceed and not FlowWindow.objects.exists()


def test_an_older_event_arriving_late_is_folded_into_the_newer_leader(db, clock):
    p = SimpleNamespace(name="flow_logic_late", debounce=Debounce(2), batch=None)
    newer, older = _run(p.name, at(1)), _run(p.name, at(0.5))
    clock["now"] = at(1.1)
    windows.admit(p, "debounce", *newer, at(1), "*", held=False)
    late = windows.admit(p, "debounce", *older, at(0.5), "*", held=False)
    assert late.folded_into == newer[0]
    assert Run.objects.get(id=older[0]).status == "debounced"


def test_max_wait_bounds_a_steady_stream(db, clock):
    p = SimpleNamespace(name="flow_logic_stream", debounce=Debounce(2, max_wait=5), batch=None)
    last = None
    for i in range(10):  # one event every 0.5 s: each would push the window 2 s on
        run = _run(p.name, at(i * 0.5))
        clock["now"] = at(i * 0.5)
        last = windows.admit(p, "debounce", *run, at(i * 0.5), "*", held=False)
    assert FlowWindow.objects.get().due_at == at(5)  # opened at 0, due no later than 5 s after
    assert last.due_in_ms == 500 + 1
    run = _run(p.name, at(5))
    clock["now"] = at(5)
    assert windows.admit(p, "debounce", *run, at(5), "*", held=False).proceed  # due: it goes at once
    assert not FlowWindow.objects.exists()
    assert Run.objects.filter(status="debounced").count() == 10


def _statuses(runs: list[tuple[str, str]]) -> list[str]:
    return [Run.objects.get(id=r).status for r, _ in runs]


def test_a_worker_behind_its_queue_still_makes_one_run_of_a_burst(db, clock):
    """Ten events 0.5 s apart, each message reaching the window long after the window was due:
    the first one to arrive finds the others accepted and hands the lead to the newest."""
    p = SimpleNamespace(name="flow_logic_behind", debounce=Debounce(2, key="k"), batch=None)
    runs = [_run(p.name, at(i * 0.5), {"k": "a"}) for i in range(10)]
    other_key = _run(p.name, at(1), {"k": "b"})  # same time, another key: not in the window
    clock["now"] = at(30)
    first = windows.admit(p, "debounce", *runs[0], at(0), "a", held=False)
    assert not first.proceed and first.folded_into == runs[9][0]
    assert first.superseded == [(r, runs[9][0]) for r, _ in runs[1:9]]  # each gets its flow.dropped line
    assert [windows.admit(p, "debounce", r, e, at(i * 0.5), "a", held=False).gone
            for i, (r, e) in enumerate(runs[1:9], start=1)] == [True] * 8
    assert windows.admit(p, "debounce", *runs[9], at(4.5), "a", held=False).proceed
    assert _statuses(runs) == ["debounced"] * 9 + ["pending"] and not FlowWindow.objects.exists()
    assert Run.objects.get(id=other_key[0]).status == "pending"


def test_a_late_worker_keeps_a_gap_longer_than_the_window_as_two_runs(db, clock):
    p = SimpleNamespace(name="flow_logic_gap", debounce=Debounce(2), batch=None)
    runs = [_run(p.name, at(t)) for t in (0, 1, 5)]  # 4 s between the second and the third
    clock["now"] = at(30)
    assert windows.admit(p, "debounce", *runs[0], at(0), "*", held=False).folded_into == runs[1][0]
    assert windows.admit(p, "debounce", *runs[1], at(1), "*", held=False).proceed
    assert windows.admit(p, "debounce", *runs[2], at(5), "*", held=False).proceed
    assert _statuses(runs) == ["debounced", "pending", "pending"]


def test_a_late_worker_taking_messages_out_of_order_still_makes_one_run(db, clock):
    """Several threads: the burst's middle message reaches the window first; the older and the
    newer ones of the burst are both found."""
    p = SimpleNamespace(name="flow_logic_unordered", debounce=Debounce(2), batch=None)
    runs = [_run(p.name, at(t)) for t in (0, 1.5, 3, 10)]  # the last one is 7 s later: a window of its own
    clock["now"] = at(30)
    middle = windows.admit(p, "debounce", *runs[1], at(1.5), "*", held=False)
    assert middle.folded_into == runs[2][0] and middle.superseded == [(runs[0][0], runs[2][0])]
    assert FlowWindow.objects.get().opened_at == at(0)
    assert windows.admit(p, "debounce", *runs[0], at(0), "*", held=False).gone
    assert windows.admit(p, "debounce", *runs[2], at(3), "*", held=False).proceed
    assert windows.admit(p, "debounce", *runs[3], at(10), "*", held=False).proceed
    assert _statuses(runs) == ["debounced", "debounced", "pending", "pending"]


def test_a_late_worker_still_bounds_a_window_by_max_wait(db, clock):
    """The same stream as on time: one event every 0.5 s; max_wait 5 s splits it at the same event."""
    p = SimpleNamespace(name="flow_logic_late_stream", debounce=Debounce(2, max_wait=5), batch=None)
    runs = [_run(p.name, at(i * 0.5)) for i in range(20)]
    clock["now"] = at(60)
    went = []
    for i, (r, e) in enumerate(runs):
        if windows.admit(p, "debounce", r, e, at(i * 0.5), "*", held=False).proceed:
            went.append(r)
            Run.objects.filter(id=r).update(status="running")  # its stage is claimed in the same delivery
    assert went == [runs[10][0], runs[19][0]]  # 0..5 s, then 5.5..9.5 s
    assert Run.objects.filter(pipeline=p.name, status="debounced").count() == 18


def test_a_due_batch_takes_in_the_events_of_its_time_still_on_their_way(db, clock):
    p = SimpleNamespace(name="flow_logic_batch_late", debounce=None, batch=Batch(3, seconds=2))
    runs = [_run(p.name, at(t)) for t in (0, 0.5, 1, 1.5, 4)]
    clock["now"] = at(30)
    due = windows.admit(p, "batch", *runs[0], at(0), "*", held=False)
    assert due.proceed and due.size == 3  # due: the next two join it...
    assert due.batched == [runs[1][0], runs[2][0]]  # ...and are named, for their flow.waiting lines
    assert [e for e, _ in windows.batch_of(runs[0][0])] == [e for _, e in runs[:3]]
    assert windows.admit(p, "batch", *runs[1], at(0.5), "*", held=False).gone
    assert windows.admit(p, "batch", *runs[3], at(1.5), "*", held=False).proceed  # past the size: the next batch
    assert windows.admit(p, "batch", *runs[4], at(4), "*", held=False).proceed  # after that window: its own
    assert _statuses(runs) == ["pending", "batched", "batched", "pending", "pending"]


def test_each_late_event_a_due_batch_takes_in_gets_its_flow_waiting_line(db, clock):
    """As an event that joins a batch on time: `flow.waiting` with its own run's ids and the run
    that carries the batch, so a trace of that event says where it went."""
    from pipeline._run_info import RunInfo
    from pipeline.flow import _gate as gate

    p = SimpleNamespace(name="flow_logic_batch_lines", debounce=None, batch=Batch(3, seconds=2), rate_limit=None)
    stage = SimpleNamespace(pipeline=p, after=(), rate_limit=None, name="only", actor_name="flow_logic.only")
    runs = [_run(p.name, at(t)) for t in (0, 0.5, 1)]
    clock["now"] = at(30)
    info = RunInfo(run_id=runs[0][0], pipeline=p.name, event_id=runs[0][1], trace_id="0" * 32, payload={},
                   occurred_at=at(0))
    with structlog.testing.capture_logs() as logs:
        assert gate.admit(stage, info, None) is True  # due: the leader goes on, with the two late events
    waiting = [line for line in logs if line["event"] == "flow.waiting"]
    assert [(w["run_id"], w["event_id"], w["batch_run_id"], w["batch_size"], w["rule"]) for w in waiting] == [
        (runs[1][0], runs[1][1], runs[0][0], 3, "batch"), (runs[2][0], runs[2][1], runs[0][0], 3, "batch")]
    assert all(w["trace_id"] == "0" * 32 and w["pipeline"] == p.name for w in waiting)


def test_a_batch_closes_when_full_and_its_run_carries_every_event(db, clock):
    p = SimpleNamespace(name="flow_logic_batch", debounce=None, batch=Batch(3, seconds=60))
    runs = [_run(p.name, at(i)) for i in range(4)]
    got = [windows.admit(p, "batch", r, e, at(i), "*", held=False) for i, (r, e) in enumerate(runs)]
    assert got[0].due_in_ms > 0 and not got[0].proceed  # the leader is held
    assert got[1].folded_into == runs[0][0] and got[1].publish_leader is None
    assert got[2].publish_leader == runs[0][0]  # the third fills it: the leader goes now
    assert got[3].due_in_ms > 0 and not got[3].proceed  # the fourth opens the next batch
    assert windows.batch_of(runs[0][0]) == [(e, at(i)) for i, (_, e) in enumerate(runs[:3])]
    assert windows.admit(p, "batch", *runs[0], at(0), "*", held=True).proceed  # its full batch's message
    assert FlowWindow.objects.get().leader_run == uuid.UUID(runs[3][0])  # ...opened no window of its own
    assert [Run.objects.get(id=r).status for r, _ in runs] == ["pending", "batched", "batched", "pending"]
    assert FlowBatchItem.objects.filter(run_id=runs[3][0]).count() == 1


def test_a_batch_that_does_not_fill_goes_when_due(db, clock):
    p = SimpleNamespace(name="flow_logic_due", debounce=None, batch=Batch(10, seconds=2))
    first, second = _run(p.name, at(0)), _run(p.name, at(1))
    windows.admit(p, "batch", *first, at(0), "*", held=False)
    windows.admit(p, "batch", *second, at(1), "*", held=False)
    clock["now"] = at(1.5)
    assert not windows.admit(p, "batch", *first, at(0), "*", held=True).proceed
    # held, not stalled: the relay leaves its first stage alone until the window is due
    assert StageRun.objects.get(run_id=first[0]).enqueued_at == at(2)
    clock["now"] = at(2)
    assert windows.admit(p, "batch", *first, at(0), "*", held=True).proceed
    assert len(windows.batch_of(first[0])) == 2


def test_the_leader_of_a_full_batch_goes_on_and_opens_no_window(db, clock):
    p = SimpleNamespace(name="flow_logic_full", debounce=None, batch=Batch(2, seconds=60))
    first, second = _run(p.name, at(0)), _run(p.name, at(1))
    windows.admit(p, "batch", *first, at(0), "*", held=False)
    assert windows.admit(p, "batch", *second, at(1), "*", held=False).publish_leader == first[0]
    assert windows.admit(p, "batch", *first, at(0), "*", held=True).proceed
    assert not FlowWindow.objects.exists()
