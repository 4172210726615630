"""Log lines: ours (structlog's native path) and third parties' (stdlib records) reach one file and
the console in one JSON shape, secrets masked, whatever Django does to logging set-up meanwhile."""
import json
import logging
import subprocess

import pytest
import sys

import structlog

from pipeline import logging as pipeline_logging
from tests.conftest import ROOT

SCRIPT = r"""
import logging, logging.config
import django
django.setup()
import structlog
from django.utils.log import DEFAULT_LOGGING
from pipeline.logging import configure_from_django, get_logger
from django.conf import settings

log = get_logger("pipeline.check")
structlog.contextvars.bind_contextvars(trace_id="t" * 32, run_id="r-1", pipeline="p", stage="s", attempt=1)
log.info("stage.succeeded", duration_ms=0.5, outcome="succeeded", api_token="tok_CANARY", payload={"password": "pw", "n": 1})
log.debug("stage.debugging")
try:
    raise ValueError("refused: secret=hunter2")
except ValueError:
    log.exception("stage.crashed")
logging.getLogger("django.request").warning("Not Found: %s", "/x")
logging.config.dictConfig(DEFAULT_LOGGING)  # what Django's set-up runs first: closes every handler
configure_from_django(settings.LOGGING)     # ... then ours again (runserver, some commands)
log.info("after.reconfigure")
logging.getLogger("dramatiq.worker").info("after.reconfigure.stdlib")
"""


def run_script(tmp_path, log_format: str) -> tuple[list[dict], str]:
    env = {
        "PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "tests.settings", "PIPELINE_PROCESS": "check",
        "PIPELINE_LOG_DIR": str(tmp_path), "PIPELINE_LOG_FORMAT": log_format, "PIPELINE_LOG_LEVEL": "INFO",
    }
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    raw = (tmp_path / "check.jsonl").read_bytes()
    return [json.loads(line) for line in raw.splitlines()], result.stderr.decode()


@pytest.mark.broker  # a real process (the slow tier)
def test_our_lines_and_library_lines_share_one_file_in_one_shape_with_secrets_masked(tmp_path):
    lines, stderr = run_script(tmp_path, "json")
    assert [l["event"] for l in lines] == [
        "stage.succeeded", "stage.crashed", "Not Found: /x", "after.reconfigure", "after.reconfigure.stdlib"]
    for line in lines:
        assert {"event", "timestamp", "level", "logger", "process", "pid", "host"} <= line.keys()
        assert line["timestamp"].endswith("Z") and line["process"] == "check"
        assert (line["trace_id"], line["run_id"], line["pipeline"], line["stage"], line["attempt"]) == (
            "t" * 32, "r-1", "p", "s", 1)
    ours, crashed, library = lines[0], lines[1], lines[2]
    assert (ours["level"], ours["logger"], ours["duration_ms"]) == ("info", "pipeline.check", 0.5)
    assert ours["api_token"] == "[redacted]" and ours["payload"] == {"password": "[redacted]", "n": 1}
    assert crashed["level"] == "error" and "Traceback" in crashed["exception"]
    assert "hunter2" not in crashed["exception"] and "secret=[redacted]" in crashed["exception"]
    assert (library["level"], library["logger"]) == ("warning", "django.request")
    # The console gets the very same bytes (JSON when stderr is not a terminal).
    assert stderr.splitlines() == (tmp_path / "check.jsonl").read_text().splitlines()


@pytest.mark.broker  # a real process (the slow tier)
def test_the_console_shows_a_readable_view_or_nothing(tmp_path):
    lines, stderr = run_script(tmp_path / "console", "console")
    assert len(lines) == 5
    assert "stage.succeeded" in stderr and "Not Found: /x" in stderr and "Traceback" in stderr
    assert not stderr.lstrip().startswith("{") and "tok_CANARY" not in stderr and "hunter2" not in stderr
    lines, stderr = run_script(tmp_path / "none", "none")
    assert len(lines) == 5 and stderr == ""


def test_line_observers_see_each_written_line_once():
    seen: list[str] = []

    def observer(event_dict: dict) -> None:
        seen.append(event_dict["event"])

    pipeline_logging.line_observers.append(observer)
    try:
        structlog.get_logger("tests.logging").info("observed.native")
        structlog.get_logger("tests.logging").debug("observed.below_level")
        logging.getLogger("tests.logging.stdlib").warning("observed.stdlib")
    finally:
        pipeline_logging.line_observers.remove(observer)
    assert seen == ["observed.native", "observed.stdlib"]


def test_each_line_carries_the_ids_bound_to_its_context_and_its_own_keys_win():
    seen: list[dict] = []
    pipeline_logging.line_observers.append(lambda event_dict: seen.append(dict(event_dict)))
    try:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(run_id="r-1", stage="first", attempt=1)
        structlog.contextvars.bind_contextvars(stage="second")  # bound again: the latest value
        structlog.get_logger("tests.logging").info("stage.started", attempt=2)  # its own key wins
        logging.getLogger("tests.logging.stdlib").warning("a library line")  # third parties' lines too
        structlog.contextvars.unbind_contextvars("run_id")
        structlog.get_logger("tests.logging").info("after.unbind")
        structlog.contextvars.clear_contextvars()
        structlog.get_logger("tests.logging").info("after.clear")
    finally:
        pipeline_logging.line_observers.pop()
        structlog.contextvars.clear_contextvars()
    native, stdlib, unbound, cleared = seen
    assert (native["run_id"], native["stage"], native["attempt"]) == ("r-1", "second", 2)
    assert (stdlib["run_id"], stdlib["stage"], stdlib["attempt"]) == ("r-1", "second", 1)
    assert "run_id" not in unbound and unbound["stage"] == "second"
    assert not {"run_id", "stage", "attempt"} & set(cleared)
