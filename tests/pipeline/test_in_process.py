"""The engine's behaviour in the fast tier: pipelines run in the test process by `pipeline.testing`
(Dramatiq's StubBroker and a Worker, the real runtime, run store and state machine; no broker).
DAG order, results passed forward, retries, fan-out/fan-in, duplicates, failure, time limits,
replay, cancel, outcome events, typed stages. What needs a real broker or a real process (kills,
outages, redelivery, several workers) stays in the `broker` tier."""
from collections import Counter

import pytest
from django.core.management import call_command

from pipeline import OperationRefused, emit, relay_once
from pipeline._definitions import registry
from pipeline.models import Event, Run, StageRun
from pipeline._publisher import enqueue_stage
from pipeline.testing import find_stage, run_pipelines
from tests.testapp.models import SideEffect, Switch


def effects(run_id, stage: str | None = None) -> int:
    query = SideEffect.objects.filter(run_id=str(run_id))
    return query.filter(stage=stage).count() if stage else query.count()


# --- DAG order and results -----------------------------------------------------------------------
def test_three_stage_pipeline_completes_passing_results_forward(pipelines):
    run = pipelines.run_of(pipelines.emit("test.started", {"value": 1}))
    run.assert_succeeded()
    assert [run.result(n)["value"] for n in ("first", "second", "third")] == [2, 20, 21]
    assert all(s.status == "succeeded" and s.attempts == 1 for s in run.stages.values())
    assert run.result("third")["key"] == f"{run.id}:third"
    stored = Run.objects.get(id=run.id)
    stages = {s.stage: s for s in StageRun.objects.filter(run=stored)}
    assert stored.started_at <= stages["first"].started_at <= stages["third"].finished_at <= stored.finished_at
    assert [e.stage for e in SideEffect.objects.filter(run_id=run.id).order_by("id")] == ["first", "second", "third"]


def test_every_transition_of_a_run_is_a_log_line_with_its_ids(pipelines):
    event_id = pipelines.emit("test.started", {"value": 5})
    run = pipelines.run_of(event_id)
    lines = [l for l in pipelines.logs() if l.get("run_id") == run.id or l.get("event_id") == event_id]
    names = [(l["event"], l.get("stage")) for l in lines]
    assert ("event.emitted", None) in names and ("event.published", None) in names
    assert ("run.started", "first") in names and ("run.succeeded", "third") in names
    for stage in ("first", "second", "third"):
        assert ("stage.started", stage) in names and ("stage.succeeded", stage) in names
    for line in lines:
        if line["event"].startswith(("stage.", "run.")):
            assert line["trace_id"] == run.trace_id and line["event_id"] == event_id
            assert line["pipeline"] == "three_stages" and line["attempt"] == 1
            assert line["message_id"] and line["level"] and line["process"]
            assert line["timestamp"].endswith("Z")


def test_fan_out_fan_in_runs_the_join_once_with_both_results(pipelines):
    event_ids = [emit("test.diamond", {"n": n}) for n in range(5)]
    pipelines.drain()
    for n, event_id in enumerate(event_ids):
        run = pipelines.run_of(event_id).assert_succeeded()
        assert run.result("join") == {"sum": 5 * n, "parents": ["left", "right"]}
    assert Counter(SideEffect.objects.values_list("stage", flat=True)) == {"split": 5, "left": 5, "right": 5, "join": 5}
    # Made ready once, by its last parent: no second message for the join was ever published.
    assert not pipelines.logs("stage.duplicate_skipped")
    assert Counter(l["stage"] for l in pipelines.logs("stage.started"))["join"] == 5


def test_fan_in_with_committing_worker_threads_runs_the_join_once(transactional_db):
    """Outside a test transaction: the group-commit writer and four threads, as in production."""
    with run_pipelines(worker_threads=4) as pipelines:
        event_ids = [emit("test.diamond", {"n": n}) for n in range(20)]
        runs = [pipelines.run_of(e) for e in event_ids]
        duplicates = pipelines.logs("stage.duplicate_skipped")
    assert Counter(r.status for r in runs) == {"succeeded": 20}
    assert duplicates == []  # each join made ready once, by its last parent
    assert [r.result("join")["sum"] for r in runs] == [5 * n for n in range(20)]
    assert Counter(SideEffect.objects.values_list("stage", flat=True))["join"] == 20


def test_typed_stages_read_the_event_as_its_model_and_name_parents_by_function(pipelines):
    run = pipelines.run_of(pipelines.emit("test.typed", {"order_id": 7, "amount_cents": 250})).assert_succeeded()
    assert run.result("reserve") == {"model": "TestTyped", "order_id": 7}
    assert run.result("bill") == {"amount_cents": 250}
    assert run.result("confirm") == {"parents": ["bill", "reserve"]}
    assert registry.get("typed").stages["confirm"].after == ("reserve", "bill")


# --- retries and failure -------------------------------------------------------------------------
def test_a_stage_that_fails_then_succeeds_is_retried_with_backoff(pipelines):
    run = pipelines.run_of(pipelines.emit("test.flaky", {"fail_times": 1})).assert_succeeded()
    unreliable = run.assert_stage("unreliable", status="succeeded", attempts=2)
    assert [e["attempt"] for e in unreliable.attempt_log] == [1]
    assert "attempt 1 failed on purpose" in unreliable.errors[0]
    run.assert_stage("finish", status="succeeded")
    (retry,) = run.logs("stage.retrying")
    assert retry["stage"] == "unreliable" and retry["retry_in_ms"] >= 100 and retry["error_type"] == "RuntimeError"


def test_a_stage_that_exhausts_its_retries_fails_the_run_and_nothing_after_it_runs(pipelines):
    run = pipelines.run_of(pipelines.emit("test.flaky", {"fail_times": 99}))
    run.assert_failed(stage="unreliable", error="stage unreliable: RuntimeError: attempt 3 failed on purpose")
    unreliable = run.assert_stage("unreliable", attempts=3)
    assert [e["attempt"] for e in unreliable.attempt_log] == [1, 2, 3]
    assert all("Traceback" in e["traceback"] for e in unreliable.attempt_log)
    assert "finish" not in run.stages and effects(run.id, "finish") == 0
    assert effects(run.id, "unreliable") == 3
    assert [l["stage"] for l in run.logs("run.failed")] == ["unreliable"]


def test_an_injected_failure_is_retried_and_then_the_stage_runs_as_declared(pipelines):
    injected = pipelines.fail("three_stages.second", times=1, exc=TimeoutError("gateway"))
    run = pipelines.run_of(pipelines.emit("test.started", {"value": 1}))
    # `second` is declared with retries=0: one injected failure fails the run.
    run.assert_failed(stage="second", error="TimeoutError: gateway")
    assert injected.calls == 1 and effects(run.id, "second") == 0
    assert "third" not in run.stages


def test_a_stage_past_its_time_limit_is_interrupted_and_fails_after_its_retries(pipelines):
    run = pipelines.run_of(pipelines.emit("test.slow", {})).assert_failed()
    stage = run.assert_stage("sleeps_past_its_limit", attempts=2)
    assert [e["error_type"] for e in stage.attempt_log] == ["TimeLimitExceeded", "TimeLimitExceeded"]
    assert all(e["duration_ms"] < 5000 for e in stage.attempt_log)


# --- claiming and duplicates ---------------------------------------------------------------------
def test_a_duplicate_stage_message_does_not_run_a_succeeded_stage_again(pipelines):
    event_id = pipelines.emit("test.started", {"value": 1})
    run = pipelines.run_of(event_id).assert_succeeded()
    first = registry.get("three_stages").stages["first"]
    for _ in range(3):
        enqueue_stage(first, run_id=run.id, event_id=event_id, trace_id=run.trace_id)
    pipelines.drain()
    assert effects(run.id, "first") == 1 and effects(run.id) == 3
    assert len(pipelines.logs("stage.duplicate_skipped", run_id=run.id)) == 3
    pipelines.run(run.id).assert_succeeded()


def test_an_event_emitted_twice_with_one_idempotency_key_starts_one_run(pipelines):
    first = pipelines.emit("test.started", {"value": 1}, idempotency_key="order-1")
    again = pipelines.emit("test.started", {"value": 1}, idempotency_key="order-1")
    assert first == again and Run.objects.filter(event_id=first).count() == 1
    pipelines.run_of(first).assert_succeeded()


# --- replay, cancel, outcomes -------------------------------------------------------------------
def test_a_failed_run_replayed_after_the_fix_completes_without_rerunning_succeeded_stages(pipelines):
    Switch.objects.create(name="broken")
    run = pipelines.run_of(pipelines.emit("test.fixable", {}))
    run.assert_failed(error="dependency is broken")
    assert effects(run.id, "breakable") == 2 and effects(run.id, "wrap_up") == 0
    with pytest.raises(OperationRefused):
        pipelines.cancel(run.id)
    Switch.objects.all().delete()
    replayed = pipelines.replay(run.id).assert_succeeded()
    assert replayed.id == run.id
    assert effects(run.id, "setup") == 1 and effects(run.id, "breakable") == 3 and effects(run.id, "wrap_up") == 1
    assert len(replayed.stage("breakable").attempt_log) == 2
    with pytest.raises(OperationRefused, match="only failed or cancelled runs can be replayed"):
        pipelines.replay(run.id)


def test_replay_from_start_is_a_new_run_of_the_same_event(pipelines):
    Switch.objects.create(name="broken")
    failed = pipelines.run_of(pipelines.emit("test.fixable", {})).assert_failed()
    Switch.objects.all().delete()
    new = pipelines.replay(failed.id, from_start=True).assert_succeeded()
    assert new.id != failed.id and new.event_id == failed.event_id and new.trigger == f"replay:{failed.id}"
    assert str(Run.objects.get(id=new.id).replay_of_id) == failed.id
    assert effects(new.id) == 3 and pipelines.run(failed.id).status == "failed"


def test_bulk_replay_replays_every_failed_run_of_a_pipeline(pipelines, capsys):
    Switch.objects.create(name="broken")
    for _ in range(3):
        emit("test.fixable", {})
    assert {r.status for r in pipelines.runs("fixable")} == {"failed"}
    Switch.objects.all().delete()
    call_command("replay", "--pipeline", "fixable", "--since", "2000-01-01T00:00:00")
    output = capsys.readouterr()
    assert "replayed 3 of 3 failed runs" in output.out and "3/3" in output.err  # the progress bar
    assert [r.status for r in pipelines.runs("fixable")] == ["succeeded"] * 3


def test_replay_through_the_api(pipelines, client, api_token):
    Switch.objects.create(name="broken")
    run = pipelines.run_of(pipelines.emit("test.fixable", {})).assert_failed()
    Switch.objects.all().delete()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    response = client.post(f"/api/runs/{run.id}/replay", **auth)
    assert response.status_code == 202 and response.json()["run_id"] == run.id
    pipelines.run(run.id).assert_succeeded()
    conflict = client.post(f"/api/runs/{run.id}/replay", **auth)
    assert conflict.status_code == 409 and "succeeded" in conflict.json()["error"]
    assert client.post("/api/runs/00000000-0000-0000-0000-000000000000/replay", **auth).status_code == 404


def test_a_run_cancelled_before_its_first_stage_runs_starts_no_stage(pipelines, client, api_token):
    event_id = emit("test.started", {"value": 1})  # not drained: its first stage waits
    run_id = str(Run.objects.get(event_id=event_id).id)
    response = client.post(f"/api/runs/{run_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 202
    run = pipelines.run(run_id).assert_cancelled()
    assert effects(run.id) == 0 and set(run.stages) <= {"first"}
    again = client.post(f"/api/runs/{run_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]


def test_a_running_stage_sees_the_cancel_and_no_further_stage_starts(pipelines):
    from pipeline import cancel

    stage = find_stage("cancellable.wait_for_cancel")
    declared = stage.fn

    def cancel_meanwhile(ctx):  # what another process would do while the stage runs
        cancel(ctx.run_id)
        return declared(ctx)

    object.__setattr__(stage, "fn", cancel_meanwhile)
    try:
        run = pipelines.run_of(pipelines.emit("test.cancellable", {}))
    finally:
        object.__setattr__(stage, "fn", declared)
    run.assert_cancelled()
    assert run.result("wait_for_cancel") == {"stopped_early": True}
    assert effects(run.id, "never_after_cancel") == 0 and "never_after_cancel" not in run.stages


def test_a_failed_run_emits_its_outcome_which_starts_the_pipeline_subscribed_to_it(pipelines):
    Switch.objects.create(name="broken")
    failed = pipelines.run_of(pipelines.emit("test.fixable", {})).assert_failed()
    (alert_run,) = pipelines.runs("alert_on_failure")
    alert_run.assert_succeeded()
    (outcome,) = failed.events
    assert outcome["type"] == "run.failed" and outcome["id"] == alert_run.event_id
    assert outcome["payload"]["run_id"] == failed.id and outcome["payload"]["pipeline"] == "fixable"
    assert Event.objects.get(id=alert_run.event_id).trace_id == failed.trace_id
    assert "dependency is broken" in outcome["payload"]["error"]
    assert alert_run.result("alert")["failed_run"] == failed.id
    # A succeeded run of fixable has no listener: no outcome event is stored for it.
    Switch.objects.all().delete()
    pipelines.replay(failed.id).assert_succeeded()
    assert not Event.objects.filter(type="run.succeeded").exists()
    assert len(pipelines.runs("alert_on_failure")) == 1


# --- priority kept with the event -----------------------------------------------------------------
def _queues_published_to(monkeypatch, broker) -> list[str]:
    published: list[str] = []
    enqueue = broker.enqueue

    def spy(message, *, delay=None):
        published.append(message.queue_name)
        return enqueue(message, delay=delay)

    monkeypatch.setattr(broker, "enqueue", spy)
    return published


def test_an_urgent_event_the_broker_refused_is_published_again_by_the_relay_still_urgent(pipelines, settings, monkeypatch):
    def refuse(message, *, delay=None):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(pipelines.broker, "enqueue", refuse)
    event_id = emit("test.started", {"value": 1}, priority="urgent")
    pipelines.drain()  # the publish after commit fails: the event waits for the relay
    event = Event.objects.get(id=event_id)
    assert event.priority == "urgent" and event.published_at is None
    monkeypatch.undo()
    published = _queues_published_to(monkeypatch, pipelines.broker)
    settings.PIPELINE_RELAY_AFTER_SECONDS = 0
    assert relay_once()["events"] == 1
    assert published == ["pipeline.urgent"]
    pipelines.run_of(event_id).assert_succeeded()


def test_a_replayed_run_of_an_urgent_event_is_urgent_again(pipelines, monkeypatch):
    Switch.objects.create(name="broken")
    run = pipelines.run_of(pipelines.emit("test.fixable", {}, priority="urgent")).assert_failed()
    Switch.objects.all().delete()
    published = _queues_published_to(monkeypatch, pipelines.broker)
    pipelines.replay(run.id).assert_succeeded()
    assert published and all(queue.endswith(".urgent") for queue in published)


def test_a_normal_event_is_stored_without_priority_and_published_on_the_plain_queue(pipelines, monkeypatch):
    published = _queues_published_to(monkeypatch, pipelines.broker)
    event_id = pipelines.emit("test.started", {"value": 1})
    pipelines.run_of(event_id).assert_succeeded()
    assert Event.objects.get(id=event_id).priority == "" and published == ["pipeline"]
