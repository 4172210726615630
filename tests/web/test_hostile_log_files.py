"""Log files are input like any other. `manage.py trace` and the dashboard's log reader skip and
count every line they cannot use — a field of the wrong type, JSON nested too deep, not JSON at
all, a line too long to hold — and go on with the rest: the command says how many it skipped, the
run page says it too and never fails. A 200 MB file without a newline is never read whole."""
from __future__ import annotations

import io
import json
import os
import tracemalloc
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from pipeline import MAX_LINE_BYTES
from tests.web.test_dashboard_views import make_run, staff, staff_client  # noqa: F401  (fixtures)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def good_lines(run_id: str) -> list[dict]:
    base = {"run_id": run_id, "trace_id": TRACE_ID, "pipeline": "p", "process": "worker", "level": "info"}
    return [
        {**base, "event": "run.started", "timestamp": "2026-01-01T00:00:00Z"},
        {**base, "event": "stage.started", "stage": "a", "attempt": 1, "pid": 7, "host": "h",
         "timestamp": "2026-01-01T00:00:00.100Z"},
        {**base, "event": "stage.succeeded", "stage": "a", "attempt": 1, "duration_ms": 5.0, "pid": 7, "host": "h",
         "timestamp": "2026-01-01T00:00:00.105Z"},
        {**base, "event": "run.succeeded", "duration_ms": 105.0, "timestamp": "2026-01-01T00:00:00.106Z"},
    ]


def crafted(run_id: str) -> dict[str, tuple[str, str]]:
    """name -> (the crafted line, naming the run; how trace describes skipping it)."""
    base = {"run_id": run_id, "trace_id": TRACE_ID, "pipeline": "p", "timestamp": "2026-01-01T00:00:00.050Z"}
    deep = "[" * 100_000 + "]" * 100_000
    wrong = "with a field of the wrong type"
    return {
        "event_is_an_int": (json.dumps({**base, "event": 42}), wrong),
        "attempt_is_a_list": (json.dumps({**base, "event": "stage.started", "stage": "a", "attempt": [1]}), wrong),
        "run_id_is_a_list": (json.dumps({**base, "event": "stage.started", "stage": "a", "attempt": 2,
                                         "run_id": [run_id], "event_id": run_id}), wrong),
        "duration_is_a_string": (json.dumps({**base, "event": "stage.succeeded", "stage": "a", "attempt": 1,
                                             "duration_ms": "5 ms"}), wrong),
        "stage_is_null": (json.dumps({**base, "event": "stage.started", "stage": None, "attempt": 3}), wrong),
        "nested_too_deep": ('{"run_id": "%s", "event": "x", "n": %s}' % (run_id, deep), "not JSON"),
        "not_json": (f"{{run_id: {run_id}, this is not JSON}}", "not JSON"),
        "lone_surrogate": (json.dumps({**base, "event": "stage.started", "stage": "\ud800", "attempt": 4}), wrong),
    }


CASES = list(crafted(str(uuid.UUID(int=0))))


def write_log(folder: Path, run_id: str, line: str) -> Path:
    good = [json.dumps(l) for l in good_lines(run_id)]
    path = folder / "worker.jsonl"
    path.write_text("\n".join(good[:2] + [line] + good[2:]) + "\n")
    return path


def trace(*args: str) -> tuple[dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("trace", *args, "--json", stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_trace_skips_a_line_it_cannot_use_says_so_and_shows_the_rest(tmp_path, case):
    run_id = str(uuid.uuid4())
    line, reason = crafted(run_id)[case]
    path = write_log(tmp_path, run_id, line)
    data, stderr = trace(run_id, str(path))
    assert f"skipped 1 unusable line(s): 1 {reason}" in stderr
    (run,) = data["runs"]
    assert run["status"] == "succeeded" and run["duration_ms"] == 105.0
    assert [(a["stage"], a["attempt"], a["outcome"], a["duration_ms"]) for a in run["attempts"]] == [
        ("a", 1, "succeeded", 5.0)]


def test_trace_prints_its_tree_past_every_crafted_line_at_once(tmp_path):
    run_id = str(uuid.uuid4())
    good = [json.dumps(l) for l in good_lines(run_id)]
    lines = [line for line, _ in crafted(run_id).values()]
    (tmp_path / "all.jsonl").write_text("\n".join(good[:2] + lines + good[2:]) + "\n")
    out, err = io.StringIO(), io.StringIO()
    call_command("trace", run_id, str(tmp_path / "all.jsonl"), stdout=out, stderr=err)
    assert "skipped 8 unusable line(s): 2 not JSON, 6 with a field of the wrong type" in err.getvalue()
    assert f"run {run_id} p  succeeded in 105 ms" in out.getvalue() and "#1" in out.getvalue()


def test_trace_says_how_many_lines_it_skipped_when_nothing_usable_names_the_id(tmp_path):
    run_id = str(uuid.uuid4())
    (tmp_path / "bad.jsonl").write_text("\n".join(line for line, _ in crafted(run_id).values()) + "\n")
    with pytest.raises(CommandError, match=r"no log line mentions .*, 8 of them skipped") as raised:
        call_command("trace", run_id, str(tmp_path / "bad.jsonl"), stdout=io.StringIO(), stderr=io.StringIO())
    assert raised.value.returncode == 1


def test_a_200_mb_line_without_a_newline_is_skipped_without_being_held(tmp_path):
    run_id = str(uuid.uuid4())
    path = tmp_path / "huge.jsonl"
    path.write_text("\n".join(json.dumps(l) for l in good_lines(run_id)) + "\n" + '{"run_id": "%s", "x": "' % run_id)
    with path.open("r+b") as handle:  # then 200 MB of one line, no newline (a sparse file: no disk used)
        handle.truncate(path.stat().st_size + 200 * 1024 * 1024)
    tracemalloc.start()
    try:
        data, stderr = trace(run_id, str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"skipped 1 unusable line(s): 1 longer than {MAX_LINE_BYTES // 2**20} MiB" in stderr
    assert data["runs"][0]["status"] == "succeeded"
    assert peak < 64 * 1024 * 1024  # a few read blocks, not the 200 MB line


def test_trace_follow_skips_unusable_lines_too(tmp_path):
    run_id = str(uuid.uuid4())
    line, _ = crafted(run_id)["attempt_is_a_list"]
    path = write_log(tmp_path, run_id, line)
    out, err = io.StringIO(), io.StringIO()
    call_command("trace", run_id, str(path), "--follow", "--json", "--timeout", "60", stdout=out, stderr=err)
    assert "skipped 1 unusable line(s)" in err.getvalue()
    assert json.loads(out.getvalue())["runs"][0]["status"] == "succeeded"


# --- the dashboard's run page ------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("case", CASES)
def test_the_run_page_skips_a_crafted_line_and_shows_the_rest(staff_client, settings, tmp_path, case):
    settings.PIPELINE_LOG_DIR = str(tmp_path)
    run = make_run()
    line, _ = crafted(str(run.id))[case]
    write_log(tmp_path, str(run.id), line)
    response = staff_client.get(f"/dashboard/runs/{run.id}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "4 lines from worker.jsonl" in page and "1 unusable line skipped" in page
    assert page.count("<tr class=\"lvl-info\">") == 4


@pytest.mark.django_db
def test_the_run_page_reads_past_a_60_mb_line_without_holding_it(staff_client, settings, tmp_path):
    settings.PIPELINE_LOG_DIR = str(tmp_path)
    run = make_run()
    path = tmp_path / "worker.jsonl"
    path.write_bytes(b'{"run_id": "%s", "x": "' % str(run.id).encode())
    with path.open("r+b") as handle:
        handle.truncate(60 * 1024 * 1024)  # under the 64 MB the page scans: all of it is read
    with path.open("ab") as handle:  # ... and after it, on a line of its own, a line of the run
        handle.write(b"\n" + json.dumps(good_lines(str(run.id))[0]).encode() + b"\n")
    tracemalloc.start()
    try:
        response = staff_client.get(f"/dashboard/runs/{run.id}/")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    page = response.content.decode()
    assert "1 line from worker.jsonl" in page and "1 unusable line skipped" in page
    assert peak < 64 * 1024 * 1024
