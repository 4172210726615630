"""Following a run through plain log files: one trace id from the HTTP request to the last stage,
`manage.py trace` rebuilding the timeline, secrets never written."""
import gzip
import json
import secrets
import subprocess
import sys

import pytest
import requests

from pipeline.models import Run, StageRun
from schedules import operations
from tests.conftest import ROOT, ManagedProcess, child_env, log_dir, read_log_lines, wait_for

TRACE_ID = secrets.token_hex(16)  # new each session: log files may hold earlier sessions' lines
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def trace(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "trace", *args], cwd=ROOT, input=stdin,
                          env=child_env("sqlite:///var/cli-test.sqlite3"), capture_output=True, text=True, timeout=120)


def run_lines(run_id: str) -> list[dict]:
    return [l for l in read_log_lines() if l.get("run_id") == run_id]


@pytest.mark.broker
def test_a_request_with_traceparent_is_traced_through_web_worker_and_retries(live_worker, live_server, api_token):
    response = requests.post(
        f"{live_server.url}/api/events",
        json={"type": "test.flaky", "payload": {"fail_times": 1}},
        headers={"Authorization": f"Bearer {api_token}", "traceparent": TRACEPARENT},
        timeout=10,
    )
    assert response.status_code == 202 and response.json()["trace_id"] == TRACE_ID
    assert response.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    event_id = response.json()["event_id"]
    run = wait_for(lambda: Run.objects.filter(event_id=event_id, status="succeeded").first(), 30, "the run")
    run_id = str(run.id)
    wait_for(lambda: any(l["event"] == "run.succeeded" for l in run_lines(run_id)), 30, "the run's last line")

    lines = [l for l in read_log_lines() if l.get("trace_id") == TRACE_ID]
    assert {l["event"] for l in lines} >= {"event.emitted", "event.published", "run.started", "stage.started",
                                          "stage.retrying", "stage.succeeded", "run.succeeded"}
    for line in run_lines(run_id):
        assert line["trace_id"] == TRACE_ID and line["event_id"] == event_id

    result = trace(run_id, str(log_dir()), "--json")
    assert result.returncode == 0, result.stderr
    timeline = json.loads(result.stdout)
    assert timeline["trace_ids"] == [TRACE_ID]
    assert [e["event_id"] for e in timeline["events"]] == [event_id]
    (traced,) = timeline["runs"]
    assert traced["run_id"] == run_id and traced["status"] == "succeeded"
    attempts = [(a["stage"], a["attempt"], a["outcome"]) for a in traced["attempts"]]
    assert attempts == [("prepare", 1, "succeeded"), ("unreliable", 1, "retrying"), ("unreliable", 2, "succeeded"),
                        ("finish", 1, "succeeded")]
    starts = [a["start_ms"] for a in traced["attempts"]]
    assert starts == sorted(starts)
    assert traced["attempts"][1]["error_type"] == "RuntimeError" and traced["attempts"][1]["retry_in_ms"] >= 100
    assert all(a["pid"] and a["host"] for a in traced["attempts"])

    text = trace(TRACE_ID, str(log_dir()))
    assert text.returncode == 0
    assert "unreliable" in text.stdout and "retry in" in text.stdout and run_id in text.stdout
    by_event = trace(event_id, str(log_dir()), "--json")
    assert json.loads(by_event.stdout)["runs"][0]["run_id"] == run_id


@pytest.mark.broker
def test_a_scheduler_fire_is_traced_from_the_fire_to_the_last_stage(live_worker, test_database_url):
    operations.create({"name": "traced_fire", "pipeline": "three_stages", "interval_seconds": 1,
                       "payload": {"value": 1}})
    scheduler = ManagedProcess("scheduler-trace", [sys.executable, "manage.py", "runscheduler", "--only",
                                                   "traced_fire"], child_env(test_database_url))
    try:
        run = wait_for(lambda: Run.objects.filter(trigger__startswith="schedule:traced_fire@",
                                                  status="succeeded").first(), 30, "a fired run to finish")
    finally:
        scheduler.stop()
    run_id = str(run.id)
    wait_for(lambda: any(l["event"] == "run.succeeded" for l in run_lines(run_id)), 30, "the run's last line")
    timeline = json.loads(trace(run_id, str(log_dir()), "--json").stdout)
    trace_id = run.event.trace_id
    assert timeline["trace_ids"] == [trace_id]
    fired = [l for l in read_log_lines("scheduler*.jsonl") if l["event"] == "schedule.fired"
             and l.get("run_id") == run_id]
    assert fired and fired[0]["trace_id"] == trace_id and fired[0]["schedule_id"] == "traced_fire"
    assert [a["stage"] for a in timeline["runs"][0]["attempts"]] == ["first", "second", "third"]


def test_a_canary_secret_in_a_payload_or_an_exception_reaches_no_log_file(pipelines):
    canary_token, canary_card = "tok_CANARY_7f3a9b", "4111 1111 1111 1111"
    event_id = pipelines.emit("test.secretive", {"api_token": canary_token, "card_number": canary_card,
                                                 "note": "hello"})
    run = pipelines.run_of(event_id).assert_failed(stage="leaky")
    for path in log_dir().glob("*"):  # this process's log file holds the stage's lines
        if path.is_file():
            content = path.read_text(errors="replace")
            assert canary_token not in content, f"token leaked into {path.name}"
            assert canary_card not in content and canary_card.replace(" ", "") not in content, path.name
    assert any(path.is_file() and run.id in path.read_text(errors="replace") for path in log_dir().glob("*"))
    stage = StageRun.objects.get(run_id=run.id, stage="leaky")
    assert canary_token not in stage.error and canary_token not in stage.traceback
    assert "[redacted]" in stage.error
    (own_line,) = run.logs("leaky.payload")  # the stage's ctx.log
    assert own_line["stage"] == "leaky" and own_line["attempt"] == 1 and own_line["pipeline"] == "secretive"
    assert own_line["trace_id"] == run.trace_id and own_line["message_id"]
    assert own_line["payload"]["api_token"] == "[redacted]" and own_line["payload"]["note"] == "hello"


# ---- bad input to `trace` -------------------------------------------------------------------

@pytest.mark.broker  # a real process (the slow tier)
def test_trace_with_an_unknown_id_exits_1(tmp_path):
    (tmp_path / "web.jsonl").write_text(json.dumps({"event": "x", "run_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12}) + "\n")
    result = trace("11111111-2222-3333-4444-555555555555", str(tmp_path))
    assert result.returncode == 1 and "no log line mentions 11111111-2222-3333-4444-555555555555" in result.stderr


@pytest.mark.broker  # a real process (the slow tier)
def test_trace_with_an_unreadable_file_or_a_bad_id_exits_2(tmp_path):
    missing = trace("11111111-2222-3333-4444-555555555555", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    bad_id = trace("order-1234", str(tmp_path))
    assert bad_id.returncode == 2 and "is not a run id" in bad_id.stderr


@pytest.mark.broker  # a real process (the slow tier)
@pytest.mark.store_independent  # reads log files it writes itself, never the run store
def test_trace_skips_corrupt_lines_with_a_count_and_reads_gzip_and_stdin(tmp_path):
    run_id = "11111111-2222-3333-4444-555555555555"
    good = [
        {"event": "run.started", "run_id": run_id, "trace_id": TRACE_ID, "pipeline": "p", "timestamp": "2026-01-01T00:00:00Z"},
        {"event": "stage.started", "run_id": run_id, "trace_id": TRACE_ID, "pipeline": "p", "stage": "a", "attempt": 1,
         "timestamp": "2026-01-01T00:00:00.100Z", "pid": 1, "host": "h"},
        {"event": "stage.succeeded", "run_id": run_id, "trace_id": TRACE_ID, "pipeline": "p", "stage": "a", "attempt": 1,
         "duration_ms": 5.0, "timestamp": "2026-01-01T00:00:00.105Z", "pid": 1, "host": "h"},
    ]
    text = "\n".join(json.dumps(l) for l in good[:2]) + "\n{\"event\": \"stage.su\n" + json.dumps(good[2]) + "\nnot json\n"
    with gzip.open(tmp_path / "worker.jsonl.gz", "wt") as handle:
        handle.write(text)
    result = trace(run_id, str(tmp_path / "*.gz"), "--json")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unusable line(s): 2 not JSON" in result.stderr
    assert json.loads(result.stdout)["runs"][0]["attempts"][0]["outcome"] == "succeeded"
    piped = trace(run_id, "-", "--json", stdin=text)
    assert piped.returncode == 0 and json.loads(piped.stdout)["runs"][0]["attempts"][0]["duration_ms"] == 5.0
