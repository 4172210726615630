"""A run's log lines for its page, from the JSON-lines files in PIPELINE_LOG_DIR when this process
can read them, through the engine's one log reader (`pipeline.log_lines_about`, the tail of each
file): a line that cannot be used (not JSON, too long, fields of the wrong type, or values this
page cannot serve) is skipped and counted, so one crafted line never fails the run page."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import LogScan, conf, log_lines_about

LINE_CAP = 500
# Only the tail of each file is scanned: a run's lines are near its time, and a page view must
# not read gigabytes. Older lines stay reachable with `manage.py trace <run id>` or grep.
SCAN_BYTES = 64 * 1024 * 1024
SHOWN_KEYS = ("timestamp", "level", "event", "process", "stage", "attempt")
HIDDEN_KEYS = set(SHOWN_KEYS) | {"run_id", "event_id", "trace_id", "pipeline", "pid", "host", "logger", "message_id"}


@dataclass
class LogLines:
    lines: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    files: list[str] = field(default_factory=list)
    partial_files: list[str] = field(default_factory=list)  # files longer than SCAN_BYTES: only their tail was read
    problem: str | None = None
    skipped: int = 0  # lines naming the run that could not be used, and lines too long to read


def _shown(line: dict[str, Any]) -> dict[str, Any] | None:
    """The line with its `extra` column, or None when it cannot be shown (values nested past
    what the encoder takes, text that is not valid Unicode)."""
    try:
        line["extra"] = " ".join(
            f"{key}={value if isinstance(value, (str, int, float)) else json.dumps(value)}"
            for key, value in line.items() if key not in HIDDEN_KEYS
        )
        json.dumps(line, ensure_ascii=False).encode("utf-8")  # a lone surrogate anywhere: not servable
    except (ValueError, TypeError, RecursionError):
        return None
    return line


def _scan(path: Path, run_id: str, cap: int, scan_bytes: int) -> tuple[list[dict], bool, int]:
    found: list[dict] = []
    counts = LogScan()
    unshowable = 0
    for line in log_lines_about(str(path), run_id, counts, tail_bytes=scan_bytes):
        if _shown(line) is None:
            unshowable += 1
            continue
        found.append(line)
        if len(found) > cap * 4:  # keep the newest: drop the oldest half now and then
            found = found[-cap * 2:]
    return found, path.stat().st_size > scan_bytes, counts.skipped + unshowable


def run_log_lines(run_id: str, *, log_dir: str | None = None, cap: int = LINE_CAP,
                  scan_bytes: int = SCAN_BYTES) -> LogLines:
    result = LogLines()
    directory = Path(log_dir or conf.get("PIPELINE_LOG_DIR"))
    try:
        paths = sorted(directory.glob("*.jsonl"))
    except OSError as exc:
        result.problem = f"log files at {directory} are not readable ({exc.strerror or exc})"
        return result
    if not paths:
        result.problem = f"no log files (*.jsonl) in {directory}"
        return result
    lines: list[dict] = []
    for path in paths:
        try:
            found, partial, skipped = _scan(path, run_id, cap, scan_bytes)
        except OSError as exc:
            result.problem = f"{path} is not readable ({exc.strerror or exc})"
            continue
        result.files.append(path.name)
        result.skipped += skipped
        if partial:
            result.partial_files.append(path.name)
        lines.extend(found)
    lines.sort(key=lambda line: str(line.get("timestamp", "")))
    if len(lines) > cap:
        result.truncated = True
        lines = lines[-cap:]
    result.lines = lines
    return result
