"""A run's log lines, read from the JSON-lines files in PIPELINE_LOG_DIR when this process can read them.

The files are input like any other: a line that cannot be used (not JSON, longer than
MAX_LINE_BYTES, fields of the wrong type: `pipeline.parse_line`) is skipped and counted, so
one crafted line never fails the run page."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from pipeline import MAX_LINE_BYTES, conf, parse_line

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


def _bounded_lines(handle: IO[bytes]) -> Iterator[bytes | None]:
    """The file's lines, each read with a bound: a line longer than MAX_LINE_BYTES comes out as
    None, and the rest of it is read past in blocks, never held."""
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:
                rest = handle.readline(1024 * 1024)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield raw


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


def _scan(path: Path, needle: bytes, run_id: str, cap: int, scan_bytes: int) -> tuple[list[dict], bool, int]:
    found: list[dict] = []
    partial = False
    skipped = 0
    with path.open("rb") as handle:
        size = path.stat().st_size
        if size > scan_bytes:
            handle.seek(size - scan_bytes)
            for _ in _bounded_lines(handle):  # the rest of a line cut in two
                break
            partial = True
        for raw in _bounded_lines(handle):  # line by line: never the whole file (nor a whole long line) in memory
            if raw is None:  # too long to read: whose it is cannot be known, so it is counted
                skipped += 1
                continue
            if needle not in raw:
                continue
            line = parse_line(raw)
            if line is not None and line.get("run_id") != run_id:
                continue  # names the run elsewhere (a parent's id in a field): not one of its lines
            if line is None or _shown(line) is None:
                skipped += 1
                continue
            found.append(line)
            if len(found) > cap * 4:  # keep the newest: drop the oldest half now and then
                found = found[-cap * 2:]
    return found, partial, skipped


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
            found, partial, skipped = _scan(path, needle, run_id, cap, scan_bytes)
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
