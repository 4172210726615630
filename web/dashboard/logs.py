"""A run's log lines, read from the JSON-lines files in PIPELINE_LOG_DIR when this process can read them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import conf

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


def _scan(path: Path, needle: bytes, run_id: str, cap: int, scan_bytes: int) -> tuple[list[dict], bool]:
    found: list[dict] = []
    partial = False
    with path.open("rb") as handle:
        size = path.stat().st_size
        if size > scan_bytes:
            handle.seek(size - scan_bytes)
            handle.readline()  # the rest of a line cut in two
            partial = True
        for raw in handle:  # line by line: never the whole file in memory
            if needle not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("run_id") == run_id:
                found.append(line)
                if len(found) > cap * 4:  # keep the newest: drop the oldest half now and then
                    found = found[-cap * 2:]
    return found, partial


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
    needle = run_id.encode()
    lines: list[dict] = []
    for path in paths:
        try:
            found, partial = _scan(path, needle, run_id, cap, scan_bytes)
        except OSError as exc:
            result.problem = f"{path} is not readable ({exc.strerror or exc})"
            continue
        result.files.append(path.name)
        if partial:
            result.partial_files.append(path.name)
        lines.extend(found)
    lines.sort(key=lambda line: str(line.get("timestamp", "")))
    if len(lines) > cap:
        result.truncated = True
        lines = lines[-cap:]
    for line in lines:
        line["extra"] = " ".join(
            f"{key}={value if isinstance(value, (str, int, float)) else json.dumps(value)}"
            for key, value in line.items() if key not in HIDDEN_KEYS
        )
    result.lines = lines
    return result
