"""An outcome whose COMMIT reached the database while its answer did not.

When PostgreSQL stops (or a connection is cut) between a COMMIT and its reply, the writer cannot
tell whether the batch committed; it runs the batch's operations again, one at a time, once the
store answers (`pipeline._writer`). An outcome written again after it had committed must be taken
for this worker's own (one claim is one message id and attempt), and what it did read back rather
than done twice: the run goes on, no stage runs twice, no fan-in is counted down twice, every
transition is logged once. Found by `make test-under-load`: a run whose first stage's success
committed as PostgreSQL shut down stalled, its inline child held by a message that had dropped it.

Fast tier (no broker); both stores (the PostgreSQL pass runs this module too)."""
from __future__ import annotations

import psycopg
import pytest

from pipeline import _stage_store as stage_store, _writer as writer
from pipeline._definitions import registry
from pipeline.models import Run
from tests.pipeline.test_inline_chains import claim, record_success, rows, split_diamond, started_run, success

pytestmark = pytest.mark.django_db(transaction=True)


# --- The outcome operations, written a second time --------------------------------------------

def test_a_success_written_again_claims_no_second_child_and_goes_on_with_the_one_it_claimed(published):
    three = registry.get("three_stages")
    first, second = three.stages["first"], three.stages["second"]
    info = started_run("test.started", {"value": 1}, "three_stages")
    claim(first, info, "message-1")
    record = success(first, info, "message-1", inline=second)
    writer.run(record)

    again = writer.run(record)

    assert again.recovered and again.inline and again.ready == [] and not again.finished
    child = rows(info)["second"]
    assert (child.status, child.attempts, child.message_id) == ("running", 1, "message-1")


def test_a_success_written_again_publishes_again_only_the_children_not_yet_claimed(published):
    diamond = registry.get("diamond")
    split, left = diamond.stages["split"], diamond.stages["left"]
    info = started_run("test.diamond", {"n": 1}, "diamond")
    claim(split, info, "m-split")
    record = success(split, info, "m-split")
    assert sorted(stage.name for stage in writer.run(record).ready) == ["left", "right"]

    again = writer.run(record)
    assert again.recovered and sorted(stage.name for stage in again.ready) == ["left", "right"]
    claim(left, info, "m-left")
    assert [stage.name for stage in writer.run(record).ready] == ["right"]  # a claimed child is not sent again


def test_a_fan_in_parent_written_again_does_not_count_the_fan_in_down_twice(published):
    info, (split, left, right, join) = split_diamond()
    claim(left, info, "m-left")
    claim(right, info, "m-right")
    left_success = success(left, info, "m-left")
    writer.run(left_success)

    again = writer.run(left_success)

    assert again.recovered and again.ready == []
    assert rows(info)["join"].parents_remaining == 1  # still waiting for `right`
    assert claim(join, info, "m-join-too-early") is None
    assert [stage.name for stage in record_success(right, info, "m-right").ready] == ["join"]


def test_a_run_end_written_again_is_reported_as_this_successs_end_with_its_stored_duration(published):
    three = registry.get("three_stages")
    info = started_run("test.started", {"value": 1}, "three_stages")
    for name in ("first", "second"):
        claim(three.stages[name], info, f"m-{name}")
        record_success(three.stages[name], info, f"m-{name}")
    claim(three.stages["third"], info, "m-third")
    last = success(three.stages["third"], info, "m-third")
    assert writer.run(last).finished
    stored = Run.objects.get(id=info.run_id)
    last.total_ms = 0.0

    again = writer.run(last)

    assert again.recovered and again.finished and again.ready == []
    assert last.total_ms == pytest.approx(stored.duration_ms)
    assert Run.objects.get(id=info.run_id).finished_at == stored.finished_at


def test_a_success_by_another_claim_is_not_taken_for_this_ones(published):
    three = registry.get("three_stages")
    first = three.stages["first"]
    info = started_run("test.started", {"value": 1}, "three_stages")
    claim(first, info, "message-1")
    record_success(first, info, "message-1")

    assert record_success(first, info, "another-message") is None
    assert record_success(first, info, "message-1", attempt=2) is None  # the same message's next claim


def failure(stage, info, message_id: str, attempt: int, final: bool) -> stage_store.FailureRecord:
    from pipeline._sql import now

    return stage_store.FailureRecord(
        stage=stage, info=info, message_id=message_id, attempt=attempt, error="RuntimeError: boom",
        traceback="Traceback: boom", error_type="RuntimeError", duration_ms=1.0, now=now(), final=final,
        delay_ms=None if final else 100,
    )


def test_a_failure_written_again_is_logged_in_the_attempt_log_once_and_ends_the_run_once(published):
    flaky = registry.get("flaky")
    prepare, unreliable = flaky.stages["prepare"], flaky.stages["unreliable"]
    info = started_run("test.flaky", {"fail_times": 5}, "flaky")
    claim(prepare, info, "m-prepare")
    record_success(prepare, info, "m-prepare")
    claim(unreliable, info, "m-1")
    retrying = failure(unreliable, info, "m-1", 1, final=False)
    writer.run(retrying)

    again = writer.run(retrying)

    assert again.recovered and not again.run_ended
    stored = rows(info)["unreliable"]
    assert stored.status == "retrying" and [entry["attempt"] for entry in stored.attempt_log] == [1]

    claim(unreliable, info, "m-1")
    final = failure(unreliable, info, "m-1", 2, final=True)
    assert writer.run(final).run_ended
    again = writer.run(final)
    assert again.recovered and again.run_ended and final.total_ms > 0
    assert [entry["attempt"] for entry in rows(info)["unreliable"].attempt_log] == [1, 2]
    assert Run.objects.get(id=info.run_id).status == "failed"


# --- A whole run, its writer's answer lost after the commit --------------------------------------

class LostAnswer:
    """The writer's transaction for the first batch holding the chosen operation commits, and then
    raises what a cut connection raises; the `refusals` transactions after it fail before doing
    anything, as while the server is still down (the operations' threads then wait for it)."""

    def __init__(self, chosen, refusals: int) -> None:
        self.chosen, self.refusals, self.fired = chosen, refusals, False
        self.real = writer.GroupCommitWriter._transaction

    def install(self, monkeypatch) -> "LostAnswer":
        monkeypatch.setattr(writer.GroupCommitWriter, "_transaction", lambda target, ops: self.transaction(target, ops))
        return self

    def transaction(self, target: writer.GroupCommitWriter, ops: list) -> list:
        if self.fired and self.refusals > 0:
            self.refusals -= 1
            raise psycopg.OperationalError("connection refused: is the server running?")
        results = self.real(target, ops)
        if not self.fired and any(self.chosen(op) for op in ops):
            self.fired = True
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return results


def success_of(stage: str):
    return lambda op: isinstance(op, stage_store.SuccessRecord) and op.stage.name == stage


def failure_of(stage: str):
    return lambda op: isinstance(op, stage_store.FailureRecord) and op.stage.name == stage


def transitions(pipelines, run_id: str) -> list[tuple]:
    """(event, stage, attempt) of the run's stage lines, (event, None, None) of its run lines."""
    lines = [line for line in pipelines.logs(run_id=run_id) if line["event"].startswith(("stage.", "run."))]
    return [(line["event"], line["stage"], line["attempt"]) if line["event"].startswith("stage.")
            else (line["event"], None, None) for line in lines]


@pytest.mark.parametrize("refusals", [0, 3], ids=["store-back-at-once", "store-down-for-a-while"])
@pytest.mark.parametrize("lost", ["chain_start", "chain_end"])
def test_a_run_whose_success_commit_lost_its_answer_finishes_with_every_transition_once(
    pipelines, monkeypatch, lost, refusals,
):
    answer = LostAnswer(success_of(lost), refusals).install(monkeypatch)

    run = pipelines.run_of(pipelines.emit("test.inline_chain", {})).assert_succeeded()

    assert answer.fired and answer.refusals == 0
    for name in ("chain_start", "chain_middle", "chain_end"):
        run.assert_stage(name, status="succeeded", attempts=1)
    assert transitions(pipelines, run.id) == [
        ("run.started", None, None),
        ("stage.started", "chain_start", 1), ("stage.succeeded", "chain_start", 1),
        ("stage.started", "chain_middle", 1), ("stage.succeeded", "chain_middle", 1),
        ("stage.started", "chain_end", 1), ("stage.succeeded", "chain_end", 1),
        ("run.succeeded", None, None),
    ]


def test_a_retry_whose_commit_lost_its_answer_is_retried_once(pipelines, monkeypatch):
    answer = LostAnswer(failure_of("chain_middle"), refusals=2).install(monkeypatch)

    run = pipelines.run_of(pipelines.emit("test.inline_chain", {"fail_times": 1})).assert_succeeded()

    assert answer.fired
    run.assert_stage("chain_middle", status="succeeded", attempts=2)
    assert [entry["attempt"] for entry in run.stage("chain_middle").attempt_log] == [1]
    events = [event for event, stage, _ in transitions(pipelines, run.id) if stage == "chain_middle"]
    assert events == ["stage.started", "stage.retrying", "stage.started", "stage.succeeded"]
