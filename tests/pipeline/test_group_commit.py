"""Group commit (`pipeline._writer`): the writes that many threads hand over are run in one
transaction per batch by the process's writer thread, and each thread goes on only once its
batch has committed. One bad operation fails alone; code already inside a Django transaction
keeps its writes in that transaction.

No broker. Transactional tests: the writer has a connection of its own, which only sees what
was committed."""
from __future__ import annotations

import threading
import types

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

import pipeline._publisher
from pipeline import emit, _writer as writer
from pipeline.models import Event, Run, StageRun
from tests.conftest import wait_for
from tests.testapp.models import SideEffect, Switch

pytestmark = pytest.mark.django_db(transaction=True)

INSERT_SWITCH = "INSERT INTO testapp_switch (name) VALUES (?)"
INSERT_EFFECT = "INSERT INTO testapp_sideeffect (run_id, stage, attempt, created_at) VALUES (?, ?, ?, ?)"
BUMP_COUNTER = "UPDATE testapp_sideeffect SET attempt = attempt + 1 WHERE run_id = ?"


def insert_switch(name: str):
    """An operation: stores a Switch row named `name` (a unique name) and returns the name."""

    def op(tx: writer.Tx) -> str:
        tx.execute(tx.d.sql(INSERT_SWITCH), (name,))
        return name

    return op


_gates: list["Gate"] = []


class Gate:
    """An operation that holds the writer thread inside its batch until released. What other
    threads hand over meanwhile queues up, and is taken as one batch once the gate opens."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        _gates.append(self)

    def __call__(self, tx: writer.Tx) -> None:
        self.entered.set()
        self.opened.wait(30)

    def hold(self, target: writer.GroupCommitWriter) -> "Gate":
        target.submit(self)
        assert self.entered.wait(10), "the writer never ran the gate"
        return self


def queued(target: writer.GroupCommitWriter) -> int:
    """How many operations wait for the writer's next batch."""
    return target._queue.qsize()


def visible_elsewhere(model, **lookup) -> bool:
    """Whether another connection (another thread's) sees the row: only committed rows."""
    seen = []

    def look() -> None:
        try:
            seen.append(model.objects.filter(**lookup).exists())
        finally:
            connections.close_all()

    thread = threading.Thread(target=look)
    thread.start()
    thread.join(30)
    return seen == [True]


def in_threads(count: int, target) -> list[threading.Thread]:
    """Starts `count` threads running target(i); each closes its own database connections."""

    def body(i: int) -> None:
        try:
            target(i)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is still waiting for the writer"


def open_gates() -> None:
    while _gates:
        _gates.pop().opened.set()


@pytest.fixture(autouse=True)
def _gates_opened_at_the_end():
    """A test that fails while holding a gate must not leave the writer blocked for the next."""
    yield
    open_gates()


@pytest.fixture
def own_writer():
    """A writer of the test's own (thread and connection), so nothing else shares its batches."""
    target = writer.GroupCommitWriter()
    yield target
    open_gates()  # before closing: close() waits for what is queued
    target.close()


def test_operations_from_many_threads_all_commit_in_fewer_transactions_than_operations():
    threads_count, per_thread = 16, 20
    now = timezone.now()
    SideEffect.objects.bulk_create(
        [SideEffect(run_id=f"counter-{t}", stage="counter", attempt=0) for t in range(threads_count)])
    results: dict[int, list[int]] = {t: [] for t in range(threads_count)}
    not_visible_on_return = []

    def work(t: int) -> None:
        for i in range(per_thread):
            def op(tx: writer.Tx, i: int = i) -> int:
                # An insert and an update of a row other operations of this thread update too.
                tx.execute(tx.d.sql(INSERT_EFFECT), (f"thread-{t}", f"op-{i}", 1, tx.d.dt(now)))
                tx.execute(tx.d.sql(BUMP_COUNTER), (f"counter-{t}",))
                return i

            results[t].append(writer.run(op))
            # Returned: committed, so this thread's own connection sees it at once.
            if not SideEffect.objects.filter(run_id=f"thread-{t}", stage=f"op-{i}").exists():
                not_visible_on_return.append((t, i))

    commits_before = writer.counters["commits"]
    # The first operation of every thread queues behind a held batch: under contention, batches.
    gate = Gate().hold(writer.writer())
    threads = in_threads(threads_count, work)
    wait_for(lambda: queued(writer.writer()) >= threads_count, 30, "every thread to hand over an operation")
    gate.opened.set()
    join_all(threads)

    operations = threads_count * per_thread
    assert results == {t: list(range(per_thread)) for t in range(threads_count)}  # each got its own result
    assert not_visible_on_return == []
    assert SideEffect.objects.filter(run_id__startswith="thread-").count() == operations
    counters = dict(SideEffect.objects.filter(stage="counter").values_list("run_id", "attempt"))
    assert counters == {f"counter-{t}": per_thread for t in range(threads_count)}
    assert writer.counters["commits"] - commits_before < operations


def test_a_thread_is_woken_only_once_its_batch_has_committed(own_writer):
    first = Gate().hold(own_writer)
    returned = threading.Event()
    results = []

    def hand_over(_: int) -> None:
        results.append(own_writer.run(insert_switch("written-in-a-held-batch")))
        returned.set()

    threads = in_threads(1, hand_over)
    wait_for(lambda: queued(own_writer) >= 1, 30, "the insert to queue behind the held batch")
    # The next batch is [the insert, a second gate]: the insert runs, then its transaction stays open.
    second = Gate()
    own_writer.submit(second)
    first.opened.set()
    assert second.entered.wait(10), "the second gate never ran"

    assert not returned.is_set() and results == []  # executed, not committed: its thread still waits
    assert not visible_elsewhere(Switch, name="written-in-a-held-batch")
    second.opened.set()
    join_all(threads)
    assert results == ["written-in-a-held-batch"]
    assert visible_elsewhere(Switch, name="written-in-a-held-batch")


def test_every_thread_of_a_batch_is_woken_in_turn_past_the_operations_nobody_waits_for(own_writer):
    """The writer wakes the batch's first waiting thread, each woken thread the next
    (`pipeline._handover.wake`); operations handed over with submit() have no thread to wake and
    must not break the chain, wherever they sit in the batch."""
    gate = Gate().hold(own_writer)
    results = []

    def hand_over(index: int) -> None:
        results.append(own_writer.run(insert_switch(f"woken-{index}")))
        own_writer.submit(insert_switch(f"submitted-after-{index}"))  # interleaved with the waiting ones

    own_writer.submit(insert_switch("submitted-first"))
    threads = in_threads(6, hand_over)
    wait_for(lambda: queued(own_writer) >= 7, 30, "six operations and a submitted one to queue behind the gate")
    gate.opened.set()

    join_all(threads)
    assert sorted(results) == sorted(f"woken-{index}" for index in range(6))
    wait_for(lambda: Switch.objects.filter(name__startswith="submitted-").count() == 7, 30, "the submitted writes")


def test_a_woken_thread_hands_the_baton_on_even_when_an_exception_reaches_it_as_it_wakes(own_writer, monkeypatch):
    """Dramatiq delivers a time limit to a worker thread as an exception at any point: one raised
    just as the thread is woken must not leave the rest of its batch asleep."""
    from pipeline import _handover

    gate = Gate().hold(own_writer)
    results, errors = [], []

    class InterruptedLock:
        """The first waiter's lock: acquired, then an exception, as a time limit would arrive."""

        def __init__(self, lock) -> None:
            self.lock = lock

        def acquire(self, *args):
            self.lock.acquire(*args)
            raise TimeoutError("the stage's time limit, delivered as the thread woke")

        def release(self) -> None:
            self.lock.release()

    real_pending = _handover.Pending
    made = []

    def pending(op, waited=True):
        made.append(item := real_pending(op, waited))
        if len(made) == 1 and waited:
            item.done = InterruptedLock(item.done)
        return item

    monkeypatch.setattr(writer, "Pending", pending)

    def hand_over(index: int) -> None:
        try:
            results.append(own_writer.run(insert_switch(f"baton-{index}")))
        except TimeoutError as exc:
            errors.append(exc)

    first = in_threads(1, hand_over)
    wait_for(lambda: queued(own_writer) >= 1, 30, "the interrupted thread's operation to queue first")
    rest = in_threads(4, lambda index: hand_over(index + 1))
    wait_for(lambda: queued(own_writer) >= 5, 30, "four more operations to queue behind it")
    gate.opened.set()

    join_all(first + rest)
    assert len(errors) == 1 and len(results) == 4


def _duplicate_name(tx: writer.Tx) -> None:
    tx.execute(tx.d.sql(INSERT_SWITCH), ("taken",))  # taken already: the unique constraint refuses it


def _raises_after_writing(tx: writer.Tx) -> None:
    tx.execute(tx.d.sql(INSERT_SWITCH), ("written-by-the-failing-operation",))
    raise ValueError("this operation fails on purpose")


@pytest.mark.parametrize("bad_op, expected", [
    pytest.param(_duplicate_name, "integrity", id="integrity-error"),
    pytest.param(_raises_after_writing, ValueError, id="exception-in-the-operation"),
])
def test_a_failing_operation_fails_only_its_own_caller_and_the_rest_of_its_batch_commits(bad_op, expected):
    Switch.objects.create(name="taken")
    SideEffect.objects.create(run_id="counter", stage="counter", attempt=0)
    outcomes: dict[str, object] = {}

    def good(name: str):
        def op(tx: writer.Tx) -> str:
            tx.execute(tx.d.sql(INSERT_SWITCH), (name,))
            tx.execute(tx.d.sql(BUMP_COUNTER), ("counter",))  # applied twice if a rolled-back batch leaked
            return name
        return op

    def hand_over(name: str, op) -> None:
        try:
            outcomes[name] = writer.run(op)
        except BaseException as exc:  # noqa: BLE001 (what the caller gets is the point)
            outcomes[name] = exc

    target = writer.writer()
    gate = Gate().hold(target)
    # Three good operations, the bad one, three more: queued in that order behind the gate, so
    # they are one batch once it opens.
    plan = [(f"good-{i}", good(f"good-{i}")) for i in range(3)] + [("bad", bad_op)] + \
        [(f"good-{i}", good(f"good-{i}")) for i in range(3, 6)]
    threads = []
    for n, (name, op) in enumerate(plan, start=1):
        threads += in_threads(1, lambda _, name=name, op=op: hand_over(name, op))
        wait_for(lambda n=n: queued(target) >= n, 30, f"{name} to queue")
    gate.opened.set()
    join_all(threads)

    bad = outcomes.pop("bad")
    if expected == "integrity":
        assert isinstance(bad, connection.Database.IntegrityError), repr(bad)
    else:
        assert isinstance(bad, expected) and "fails on purpose" in str(bad)
    assert outcomes == {f"good-{i}": f"good-{i}" for i in range(6)}
    assert set(Switch.objects.values_list("name", flat=True)) == {"taken", *outcomes}
    assert SideEffect.objects.get(run_id="counter").attempt == 6  # each good operation applied once
    assert writer.run(insert_switch("after-the-failure")) == "after-the-failure"  # the writer goes on


def test_inside_transaction_atomic_an_operation_runs_in_the_callers_transaction():
    ran_on = []

    def op(name: str):
        def run(tx: writer.Tx) -> str:
            ran_on.append(threading.get_ident())
            return insert_switch(name)(tx)
        return run

    # Outside a transaction: on the writer's thread, committed when run() returns.
    writer.run(op("outside"))
    assert ran_on[-1] != threading.get_ident() and visible_elsewhere(Switch, name="outside")

    # Inside: on the caller's connection, seen by the caller, by nobody else until it commits...
    with transaction.atomic():
        writer.run(op("inside-committed"))
        assert ran_on[-1] == threading.get_ident()
        assert Switch.objects.filter(name="inside-committed").exists()
        assert not visible_elsewhere(Switch, name="inside-committed")
    assert visible_elsewhere(Switch, name="inside-committed")

    # ...and rolled back with it.
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            writer.run(op("inside-rolled-back"))
            assert Switch.objects.filter(name="inside-rolled-back").exists()
            raise RuntimeError("the caller's transaction fails after the write")
    assert not Switch.objects.filter(name="inside-rolled-back").exists()


def test_submit_runs_later_and_inside_a_transaction_only_if_it_commits():
    ran = []

    def op(name: str):
        def run(tx: writer.Tx) -> None:
            ran.append(name)
            insert_switch(name)(tx)
        return run

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            writer.submit(op("submitted-then-rolled-back"))
            raise RuntimeError("rolled back")
    with transaction.atomic():
        writer.submit(op("submitted-then-committed"))
        assert ran == []  # not before the commit
    writer.submit(op("submitted-outside"))  # fire and forget: the writer runs it in a coming batch
    wait_for(lambda: Switch.objects.filter(name="submitted-outside").exists(), 30, "the submitted operation")
    assert "submitted-then-rolled-back" not in ran
    assert set(Switch.objects.values_list("name", flat=True)) == {"submitted-then-committed", "submitted-outside"}


def test_emits_from_many_threads_are_all_stored_with_their_runs_and_share_commits(monkeypatch):
    threads_count, per_thread = 24, 5
    published = []

    def publish_first_stages(event_id, trace_id, first_stages, carried=None):
        # Called in the emitting thread once its rows are written: they must be committed.
        published.append((event_id, [run_id for _, run_id in first_stages],
                          Event.objects.filter(id=event_id).exists()))
        return True

    monkeypatch.setattr(pipeline._publisher, "publish_first_stages", publish_first_stages)
    event_ids = []

    def work(t: int) -> None:
        for i in range(per_thread):
            event_ids.append(emit("test.started", {"value": t * 100 + i}))

    commits_before = writer.counters["commits"]
    gate = Gate().hold(writer.writer())
    threads = in_threads(threads_count, work)
    wait_for(lambda: queued(writer.writer()) >= threads_count, 30, "every thread's first emit to queue")
    gate.opened.set()
    join_all(threads)

    emits = threads_count * per_thread
    assert len(set(event_ids)) == emits
    assert Event.objects.filter(id__in=event_ids).count() == emits
    runs = list(Run.objects.filter(event_id__in=event_ids).values_list("id", "pipeline", "status"))
    assert len(runs) == emits and {(p, s) for _, p, s in runs} == {("three_stages", "pending")}
    firsts = StageRun.objects.filter(run_id__in=[r for r, _, _ in runs])
    assert set(firsts.values_list("stage", "status")) == {("first", "pending")}
    assert firsts.count() == emits
    assert len(published) == emits and all(committed for _, _, committed in published)
    assert {str(run_id) for _, run_ids, _ in published for run_id in run_ids} == {str(r) for r, _, _ in runs}
    assert writer.counters["commits"] - commits_before < emits


def test_an_idle_writer_gives_its_connection_back_and_reconnects_for_the_next_batch(own_writer, monkeypatch):
    monkeypatch.setattr(writer, "IDLE_CLOSE_SECONDS", 0.2)
    assert own_writer.run(insert_switch("before-idle")) == "before-idle"
    wait_for(lambda: own_writer._wrapper is None, 30, "the idle writer to close its connection")
    assert own_writer.run(insert_switch("after-idle")) == "after-idle"
    own_writer.close()
    assert own_writer._wrapper is None
    assert own_writer.run(insert_switch("after-close")) == "after-close"
    assert set(Switch.objects.values_list("name", flat=True)) == {"before-idle", "after-idle", "after-close"}


def test_on_sqlite_a_batch_waits_for_a_write_lock_another_connection_holds(own_writer, monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's single write lock")
    import sqlite3
    import time

    retries = threading.Event()

    def sleep(seconds: float) -> None:
        if threading.current_thread() is own_writer._thread:
            retries.set()  # BEGIN IMMEDIATE found the database locked and will try again
        time.sleep(seconds)

    monkeypatch.setattr(writer, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=0)
    results = []
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        other.execute(INSERT_SWITCH, ("written-by-the-other-connection",))
        threads = in_threads(1, lambda _: results.append(own_writer.run(insert_switch("waited-for-the-lock"))))
        assert retries.wait(10), "the writer never met the lock"
        assert results == []
        other.execute("COMMIT")
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    join_all(threads)
    assert results == ["waited-for-the-lock"]
    assert set(Switch.objects.values_list("name", flat=True)) == {"written-by-the-other-connection",
                                                                  "waited-for-the-lock"}


def test_emits_of_one_batch_are_written_as_one_insert_per_table(monkeypatch):
    monkeypatch.setattr(pipeline._publisher, "publish_first_stages", lambda *args, **kwargs: True)
    emits, event_ids = 6, []
    target = writer.writer()
    gate = Gate().hold(target)
    threads = in_threads(emits, lambda i: event_ids.append(emit("test.started", {"value": i})))
    wait_for(lambda: queued(target) >= emits, 30, "every emit to queue behind the gate")
    statements_before = writer.counters["statements"]
    gate.opened.set()
    join_all(threads)

    # Events, runs, first stages: one multi-row INSERT each (PostgreSQL: all three in one statement).
    assert writer.counters["statements"] - statements_before == (1 if connection.vendor == "postgresql" else 3)
    assert Event.objects.filter(id__in=event_ids).count() == emits
    assert StageRun.objects.filter(run__event_id__in=event_ids, stage="first", status="pending").count() == emits


def test_an_emit_whose_idempotency_key_is_taken_gets_the_first_event_and_the_rest_of_its_batch_is_stored(
        monkeypatch):
    monkeypatch.setattr(pipeline._publisher, "publish_first_stages", lambda *args, **kwargs: True)
    first = emit("test.started", {"value": 0}, idempotency_key="order-7")
    outcomes: dict[str, str] = {}
    target = writer.writer()
    gate = Gate().hold(target)
    plan = [("fresh-1", None), ("repeat", "order-7"), ("fresh-2", None), ("fresh-3", "order-8")]
    threads = []
    for n, (name, key) in enumerate(plan, start=1):
        threads += in_threads(1, lambda _, name=name, key=key: outcomes.__setitem__(
            name, emit("test.started", {"value": n}, idempotency_key=key)))
        wait_for(lambda n=n: queued(target) >= n, 30, f"{name} to queue")
    gate.opened.set()
    join_all(threads)

    assert outcomes["repeat"] == first
    fresh = [outcomes["fresh-1"], outcomes["fresh-2"], outcomes["fresh-3"]]
    assert len(set(fresh)) == 3 and first not in fresh
    assert Event.objects.count() == 4 and Run.objects.count() == 4
