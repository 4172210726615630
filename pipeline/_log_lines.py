"""What a usable log line is: a JSON object with a text `event` and, where present, the fields
the trace command and the dashboard read, each of the right type. A log file is input like any
other, so a line that fails this is skipped and counted, never a crash (`pipeline._logfiles`)."""
from __future__ import annotations

import json
import math
from typing import Any

MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line is skipped unread (ours: a payload is at most 256 KiB)

# The fields trace and the dashboard read, with the types they must have when present (null is
# taken as absent). A stage.* line also needs its stage (text) and attempt (an integer).
_TEXT_FIELDS = ("timestamp", "level", "logger", "process", "host", "run_id", "event_id", "trace_id", "pipeline",
                "stage", "message_id", "event_type", "error", "error_type", "reason", "outcome")
_INT_FIELDS = ("attempt", "pid", "runs_started")
_NUMBER_FIELDS = ("duration_ms", "retry_in_ms")


def _text_ok(value: Any) -> bool:
    if type(value) is not str:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # a lone surrogate (from a `\ud800` escape) cannot be printed or served
    except UnicodeEncodeError:
        return False
    return True


def usable(line: Any) -> bool:
    """Whether a parsed log line can be used: a JSON object with a text `event` and the known
    fields of the right types."""
    if type(line) is not dict or not _text_ok(line.get("event")):
        return False
    for key in _TEXT_FIELDS:
        value = line.get(key)
        if value is not None and not _text_ok(value):
            return False
    for key in _INT_FIELDS:
        value = line.get(key)
        if value is not None and type(value) is not int:
            return False
    for key in _NUMBER_FIELDS:
        value = line.get(key)
        if value is not None and not (type(value) in (int, float) and math.isfinite(value)):
            return False
    if line["event"].startswith("stage.") and (line.get("stage") is None or line.get("attempt") is None):
        return False
    return True


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The line as a dict if it is a usable log line; None otherwise (not JSON, nested past what
    the parser takes, numbers too long, wrong field types)."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return line if usable(line) else None
