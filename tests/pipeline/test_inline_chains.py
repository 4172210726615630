"""Linear chains continued inline, and what a stage's success records.

A stage whose only child has it as only parent, on the same queue, records its success and
claims that child for the same message in one transaction, then runs the child in the same
worker thread: one broker message per linear chain. Every transition is still recorded and
logged per stage; a child that fails and has retries left is retried as a message of its own; a
worker killed mid-chain leaves the child held by the message, whose redelivery resumes there.
A fan-in counts its parents down and is made ready exactly once.

Fast tier (no broker): the decision, and the store's transitions driven directly as the worker
would (`pipeline._stage_store`). Broker tier: a real `rundramatiq` on queues of these tests' own."""
from __future__ import annotations

import dataclasses
import signal
import threading
import types
from pathlib import Path

import orjson
import pytest
import structlog
from django.db import connection

from pipeline import emit, _stage_store as stage_store, _writer as writer
from pipeline._definitions import registry
from pipeline.middleware import _drain as drain
from pipeline.models import Run, StageRun
from pipeline._operations import cancel, replay
from pipeline._redelivery import not_claimed
from pipeline._runtime import RunInfo, _inline_child, _lease
from tests.conftest import ManagedProcess, SharedWorker, purge_queues, read_log_lines, start_worker, wait_for
from tests.testapp.models import SideEffect
from tests.testapp.pipelines import INLINE_KILL_QUEUE, INLINE_QUEUE

WORKER = "test-worker"


# --- Which child is continued inline -----------------------------------------------------------

def test_a_linear_child_on_the_same_queue_is_continued_inline():
    three = registry.get("three_stages")
    assert _inline_child(three.stages["first"], three.children("first")) is three.stages["second"]
    assert _inline_child(three.stages["second"], three.children("second")) is three.stages["third"]
    assert _inline_child(three.stages["third"], three.children("third")) is None  # the last stage


def test_a_fan_out_or_a_fan_in_child_is_published_not_continued_inline():
    diamond = registry.get("diamond")
    assert [c.name for c in diamond.children("split")] == ["left", "right"]
    assert _inline_child(diamond.stages["split"], diamond.children("split")) is None
    # `join` is the only child of `left`, but it also waits for `right`.
    assert [c.name for c in diamond.children("left")] == ["join"]
    assert _inline_child(diamond.stages["left"], diamond.children("left")) is None


def test_a_child_on_another_queue_is_published_not_continued_inline():
    # A pipeline's stages share its queue (`Pipeline(queue=...)`), so the child is rebuilt here
    # with an actor on another queue, as per-stage queues would declare it.
    three = registry.get("three_stages")
    elsewhere = dataclasses.replace(three.stages["second"], actor=types.SimpleNamespace(queue_name="elsewhere"))
    assert _inline_child(three.stages["first"], [elsewhere]) is None


def test_no_child_is_continued_inline_when_inline_chains_are_off(settings):
    settings.PIPELINE_INLINE_CHAINS = False
    three = registry.get("three_stages")
    assert _inline_child(three.stages["first"], three.children("first")) is None


def test_no_child_is_continued_inline_while_the_worker_drains():
    three = registry.get("three_stages")
    drain._draining.set()
    try:
        assert _inline_child(three.stages["first"], three.children("first")) is None
    finally:
        drain._draining.clear()
    assert _inline_child(three.stages["first"], three.children("first")) is three.stages["second"]


# --- The store's transitions, driven as the worker drives them (no broker) ---------------------

def started_run(event_type: str, payload: dict, pipeline_name: str) -> RunInfo:
    event_id = emit(event_type, payload)
    run = Run.objects.select_related("event").get(event_id=event_id, pipeline=pipeline_name)
    return RunInfo(run_id=str(run.id), pipeline=pipeline_name, event_id=event_id, trace_id=run.event.trace_id)


def claim(stage, info: RunInfo, message_id: str):
    """(attempt, parents' results, whether this claim started the run), or None: not claimed.
    As a redelivery whose check found the holder dead (here: this same worker, restarted) may take
    back a stage running under its own message id (`pipeline._redelivery.inspect`)."""
    return stage_store.claim(stage, info, message_id, WORKER, _lease(stage), None, take_back=WORKER)


def success(stage, info: RunInfo, message_id: str, attempt: int = 1, inline=None) -> stage_store.SuccessRecord:
    """The operation the worker hands to the writer when a stage returned {"from": <its name>}."""
    return stage_store.SuccessRecord(
        stage=stage, info=info, message_id=message_id, attempt=attempt,
        result_json=orjson.dumps({"from": stage.name}).decode(), duration_ms=1.0,
        children=stage.pipeline.children(stage.name), inline=inline, worker=WORKER,
        inline_lease=_lease(inline) if inline is not None else None,
    )


def record_success(stage, info: RunInfo, message_id: str, attempt: int = 1, inline=None):
    """What the success left to do: Done(ready=[...], inline=..., finished=...), or None: not recorded."""
    return writer.run(success(stage, info, message_id, attempt, inline))


def split_diamond(n: int = 1):
    """A `diamond` run whose `split` succeeded (`left` and `right` ready): (info, its four stages)."""
    diamond = registry.get("diamond")
    stages = tuple(diamond.stages[name] for name in ("split", "left", "right", "join"))
    info = started_run("test.diamond", {"n": n}, "diamond")
    claim(stages[0], info, "m-split")
    assert sorted(s.name for s in record_success(stages[0], info, "m-split").ready) == ["left", "right"]
    return info, stages


def rows(info: RunInfo) -> dict[str, StageRun]:
    return {row.stage: row for row in StageRun.objects.filter(run_id=info.run_id)}


@pytest.mark.django_db(transaction=True)
def test_a_success_claims_the_linear_child_for_the_same_message_in_the_same_transaction(published):
    three = registry.get("three_stages")
    first, second = three.stages["first"], three.stages["second"]
    info = started_run("test.started", {"value": 1}, "three_stages")
    assert claim(first, info, "message-1")[0] == 1

    done = record_success(first, info, "message-1", inline=second)

    assert done.inline and done.ready == [] and not done.finished
    stored = rows(info)
    assert stored["first"].status == "succeeded" and stored["first"].message_id == "message-1"
    child = stored["second"]
    assert (child.status, child.attempts, child.message_id, child.worker) == ("running", 1, "message-1", WORKER)
    assert child.started_at is not None and child.lease_until > child.started_at
    assert "third" not in stored
    assert [name for name, _ in published] == ["first"]  # emit's message only: nothing published for second


@pytest.mark.django_db(transaction=True)
def test_a_success_in_a_run_cancelled_meanwhile_claims_no_child(published):
    three = registry.get("three_stages")
    first, second = three.stages["first"], three.stages["second"]
    info = started_run("test.started", {"value": 1}, "three_stages")
    claim(first, info, "message-1")
    cancel(info.run_id)

    done = record_success(first, info, "message-1", inline=second)

    assert done is not None and not done.inline and done.ready == [] and not done.finished
    assert set(rows(info)) == {"first"}
    assert Run.objects.get(id=info.run_id).status == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_redelivered_message_finds_its_stage_done_and_resumes_with_the_stage_it_still_holds(published):
    three = registry.get("three_stages")
    first, second = three.stages["first"], three.stages["second"]
    info = started_run("test.started", {"value": 1}, "three_stages")
    claim(first, info, "message-1")
    record_success(first, info, "message-1", inline=second)
    # The worker dies here, running `second` for message-1; the broker hands message-1 out again.

    assert claim(first, info, "message-1") is None  # `first` succeeded: it does not run again
    with structlog.testing.capture_logs() as logs:
        resumed = not_claimed(first, info, "message-1")
        duplicate = not_claimed(first, info, "another-message")  # a copy that holds nothing
    assert resumed is second and duplicate is None
    assert [(line["event"], line.get("resumed_stage")) for line in logs] == [
        ("stage.resumed", "second"), ("stage.duplicate_skipped", None)]

    attempt, results, _ = claim(second, info, "message-1")
    assert attempt == 2 and results == {"first": {"from": "first"}}
    assert claim(second, info, "another-message") is None  # held by message-1, its lease running


@pytest.mark.django_db(transaction=True)
def test_a_fan_in_is_made_ready_by_its_last_parent_and_only_once(published):
    info, (split, left, right, join) = split_diamond()
    claim(left, info, "m-left")
    claim(right, info, "m-right")

    first_parent = record_success(left, info, "m-left")
    assert first_parent.ready == [] and not first_parent.inline
    waiting = rows(info)["join"]
    assert (waiting.status, waiting.parents_remaining, waiting.enqueued_at) == ("pending", 1, None)
    assert claim(join, info, "m-join-too-early") is None  # a stray message cannot start it early

    last_parent = record_success(right, info, "m-right")
    assert [s.name for s in last_parent.ready] == ["join"]
    ready = rows(info)["join"]
    assert (ready.status, ready.parents_remaining) == ("pending", 0) and ready.enqueued_at is not None

    again = record_success(right, info, "m-right")  # the same success again (tests/pipeline/test_committed_before.py)
    assert again.recovered and rows(info)["join"].parents_remaining == 0
    attempt, results, _ = claim(join, info, "m-join")
    assert attempt == 1 and results == {"left": {"from": "left"}, "right": {"from": "right"}}


@pytest.mark.django_db(transaction=True)
def test_two_parents_succeeding_at_once_on_two_connections_make_the_fan_in_ready_exactly_once(published):
    diamond = registry.get("diamond")
    split, left, right = (diamond.stages[n] for n in ("split", "left", "right"))
    writers = (writer.GroupCommitWriter(), writer.GroupCommitWriter())  # two connections, as two processes
    try:
        for attempt in range(5):
            info = started_run("test.diamond", {"n": attempt}, "diamond")
            claim(split, info, "m-split")
            record_success(split, info, "m-split")
            claim(left, info, "m-left")
            claim(right, info, "m-right")
            # Both transactions open at once (PostgreSQL: the second upsert waits for the first's
            # row); SQLite has one writer at a time, so there both start together instead.
            together = threading.Barrier(2)
            inside = connection.vendor == "postgresql"
            done = {}

            def parent(stage, message_id, target):
                record = success(stage, info, message_id)

                def op(tx):
                    if inside:
                        together.wait(10)
                    return record(tx)

                if not inside:
                    together.wait(10)
                done[stage.name] = target.run(op)

            threads = [threading.Thread(target=parent, args=(left, "m-left", writers[0])),
                       threading.Thread(target=parent, args=(right, "m-right", writers[1]))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert set(done) == {"left", "right"} and all(d is not None for d in done.values())
            made_ready = [name for name, d in done.items() for s in d.ready if s.name == "join"]
            assert len(made_ready) == 1, (attempt, done)
            assert rows(info)["join"].parents_remaining == 0
    finally:
        for target in writers:
            target.close()


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_run_replayed_after_one_parent_of_its_fan_in_succeeded_still_runs_the_fan_in(published):
    info, (split, left, right, join) = split_diamond()
    claim(left, info, "m-left")
    record_success(left, info, "m-left")  # join: pending, one parent to go
    cancel(info.run_id)  # `right` is still waiting: cancelled with the run
    assert replay(info.run_id) == info.run_id  # resumes from `right`
    assert claim(right, info, "m-right-replayed") is not None

    assert [s.name for s in record_success(right, info, "m-right-replayed").ready] == ["join"]
    assert claim(join, info, "m-join") is not None, rows(info)["join"].status


# --- On a real worker --------------------------------------------------------------------------

def start_queue_worker(database_url: str, name: str, queue: str, threads: int = 4) -> ManagedProcess:
    """One worker process consuming only `queue`, its JSON lines in `<log dir>/<name>.jsonl`."""
    return start_worker(database_url, name, processes=1, threads=threads, queue=queue, own_log=True)


@pytest.fixture(scope="module")
def chain_worker(test_database_url):
    """Shared by this module's tests, and idle again before each one's data is flushed (conftest)."""
    purge_queues(INLINE_QUEUE)
    shared = SharedWorker(test_database_url, "inline-chains", INLINE_QUEUE, processes=1, threads=4, own_log=True)
    yield shared.ensure_started()
    shared.stop()


@pytest.fixture
def live_chain_worker(chain_worker, transactional_db):
    purge_queues(INLINE_QUEUE)
    return chain_worker.ensure_started()


def finished_run(event_id: str, timeout: float = 60) -> Run:
    return wait_for(
        lambda: Run.objects.filter(event_id=event_id, status__in=["succeeded", "failed", "cancelled"]).first(),
        timeout, f"the run of event {event_id} to finish", interval=0.2,
    )


def run_lines(run: Run, log_name: str, last: str) -> list[dict]:
    """The run's lines in `<log_name>.jsonl`, once its `last` line is there."""
    def lines():
        found = [line for line in read_log_lines(f"{log_name}.jsonl") if line.get("run_id") == str(run.id)]
        return found if any(line["event"] == last for line in found) else None

    return wait_for(lines, 30, f"the {last} line of run {run.id}", interval=0.2)


def transitions(lines: list[dict], *events: str) -> list[tuple]:
    return [(line["event"], line["stage"], line["attempt"], line["message_id"])
            for line in lines if line["event"] in events]


def stored_stages(run_id: str) -> dict[str, StageRun]:
    return {row.stage: row for row in StageRun.objects.filter(run_id=run_id)}


def in_process_lines(pipelines, run_id: str) -> list[dict]:
    return [line for line in pipelines.logs() if line.get("run_id") == run_id]


def test_a_linear_run_is_carried_by_one_message_from_its_first_stage_to_its_last(pipelines):
    run = pipelines.run_of(pipelines.emit("test.inline_chain", {})).assert_succeeded()
    stored = stored_stages(run.id)
    assert {name: (row.status, row.attempts) for name, row in stored.items()} == {
        "chain_start": ("succeeded", 1), "chain_middle": ("succeeded", 1), "chain_end": ("succeeded", 1)}
    assert stored["chain_end"].result == {"n": 3}

    lines = in_process_lines(pipelines, run.id)
    [message_id] = {line["message_id"] for line in lines}  # one message: every line carries its id
    assert transitions(lines, "stage.started", "stage.succeeded") == [
        ("stage.started", "chain_start", 1, message_id), ("stage.succeeded", "chain_start", 1, message_id),
        ("stage.started", "chain_middle", 1, message_id), ("stage.succeeded", "chain_middle", 1, message_id),
        ("stage.started", "chain_end", 1, message_id), ("stage.succeeded", "chain_end", 1, message_id),
    ]
    assert {row.message_id for row in stored.values()} == {message_id}
    assert [line["event"] for line in lines].count("run.succeeded") == 1


def test_a_stage_continued_inline_that_fails_is_retried_as_a_message_of_its_own(pipelines):
    run = pipelines.run_of(pipelines.emit("test.inline_chain", {"fail_times": 1})).assert_succeeded()
    stored = stored_stages(run.id)
    middle = stored["chain_middle"]
    assert (middle.status, middle.attempts) == ("succeeded", 2)
    assert [entry["attempt"] for entry in middle.attempt_log] == [1]
    assert middle.attempt_log[0]["error"] == "RuntimeError: chain_middle attempt 1 failed on purpose"
    assert (stored["chain_start"].attempts, stored["chain_end"].attempts) == (1, 1)
    assert stored["chain_end"].result == {"n": 3}

    lines = in_process_lines(pipelines, run.id)
    first_message = stored["chain_start"].message_id
    retry_message = middle.message_id
    assert retry_message != first_message
    assert transitions(lines, "stage.started", "stage.retrying") == [
        ("stage.started", "chain_start", 1, first_message),
        ("stage.started", "chain_middle", 1, first_message),  # continued inline, failed...
        ("stage.retrying", "chain_middle", 1, first_message),
        ("stage.started", "chain_middle", 2, retry_message),  # ...retried by a message of its own,
        ("stage.started", "chain_end", 1, retry_message),  # which carries the rest of the chain
    ]
    assert stored["chain_end"].message_id == retry_message
    assert SideEffect.objects.filter(run_id=run.id).count() == 4


def test_a_stage_continued_inline_gets_its_own_time_limit_not_what_is_left_of_its_parents(pipelines):
    # Two stages of 2 s under 3.5 s limits: the chain outlasts the first stage's limit.
    long_run = pipelines.run_of(pipelines.emit("test.inline_long_stages", {})).assert_succeeded()
    long_rows = list(StageRun.objects.filter(run_id=long_run.id))
    assert len({row.message_id for row in long_rows}) == 1  # the second ran inline
    assert all(row.attempts == 1 for row in long_rows)

    # A 1 s child after a 30 s parent is stopped by its own limit.
    tight_run = pipelines.run_of(pipelines.emit("test.inline_tight_child", {})).assert_failed(stage="tight_child")
    stored = stored_stages(tight_run.id)
    assert stored["roomy_parent"].status == "succeeded"
    assert stored["tight_child"].message_id == stored["roomy_parent"].message_id  # it ran inline
    assert [entry["error_type"] for entry in stored["tight_child"].attempt_log] == ["TimeLimitExceeded"]


@pytest.mark.broker
def test_a_worker_killed_mid_chain_is_resumed_by_the_redelivered_message_from_the_stage_it_held(
    transactional_db, test_database_url
):
    purge_queues(INLINE_KILL_QUEUE)
    doomed = start_queue_worker(test_database_url, "inline-kill-1", INLINE_KILL_QUEUE, threads=2)
    try:
        run_id = Run.objects.get(event_id=emit("test.inline_killable", {"sleep": 30})).id
        wait_for(lambda: SideEffect.objects.filter(run_id=str(run_id), stage="kill_slow").exists(), 30,
                 "kill_slow to start")
        doomed.signal(signal.SIGKILL)  # no chance to record, ack or publish anything
        doomed.popen.wait(10)
    finally:
        doomed.stop()
    stored = {row.stage: row for row in StageRun.objects.filter(run_id=run_id)}
    carrier = stored["kill_before"].message_id
    assert stored["kill_before"].status == "succeeded"
    # The child is held by the message that carried its parent, which was never acknowledged.
    assert (stored["kill_slow"].status, stored["kill_slow"].attempts, stored["kill_slow"].message_id) == (
        "running", 1, carrier)
    assert "kill_after" not in stored

    survivor = start_queue_worker(test_database_url, "inline-kill-2", INLINE_KILL_QUEUE, threads=2)
    try:
        run = wait_for(lambda: Run.objects.filter(id=run_id, status__in=["succeeded", "failed"]).first(), 60,
                       "the run to complete on the surviving worker")
        lines = run_lines(run, "inline-kill-2", "run.succeeded")
    finally:
        survivor.stop()
    assert run.status == "succeeded", run.error
    [resumed] = [line for line in lines if line["event"] == "stage.resumed"]
    assert (resumed["stage"], resumed["resumed_stage"], resumed["message_id"]) == ("kill_before", "kill_slow", carrier)
    assert transitions(lines, "stage.started") == [
        ("stage.started", "kill_slow", 2, carrier), ("stage.started", "kill_after", 1, carrier)]
    stored = {row.stage: row for row in StageRun.objects.filter(run_id=run_id)}
    assert {name: (row.status, row.attempts) for name, row in stored.items()} == {
        "kill_before": ("succeeded", 1), "kill_slow": ("succeeded", 2), "kill_after": ("succeeded", 1)}
    ran = [stage for stage in SideEffect.objects.filter(run_id=str(run_id)).values_list("stage", flat=True)]
    assert sorted(ran) == ["kill_after", "kill_before", "kill_slow", "kill_slow"]


def test_the_inline_chains_switch_reads_yes_and_no_and_refuses_anything_else_naming_the_variable(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from pipeline import conf

    for value, expected in (("0", False), ("off", False), ("1", True), ("Yes", True)):
        monkeypatch.setenv("PIPELINE_INLINE_CHAINS", value)
        assert conf.get("PIPELINE_INLINE_CHAINS") is expected
    monkeypatch.setenv("PIPELINE_INLINE_CHAINS", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"PIPELINE_INLINE_CHAINS='maybe': use 1 or 0"):
        conf.get("PIPELINE_INLINE_CHAINS")


@pytest.mark.broker  # a real process (the slow tier)
def test_a_process_started_with_a_bad_inline_chains_value_stops_at_once_saying_why():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PIPELINE_INLINE_CHAINS": "maybe", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode != 0
    assert "PIPELINE_INLINE_CHAINS='maybe'" in done.stderr
