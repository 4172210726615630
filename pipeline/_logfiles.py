"""Reading the engine's JSON-lines log files: every line about a run, event or trace id, from the
files of every process (or stdin), streamed in blocks so memory grows with the run, not with the
files; and following them as they grow.

Log files are input like any other: a line that is not JSON, is longer than `MAX_LINE_BYTES`
(never held whole: the rest of it is read past), or whose known fields have the wrong type
(`pipeline._log_lines.usable`) is skipped and counted, never a crash. The one reader of the log
files: `manage.py trace` (`scan`, `follow_files`) and the dashboard's run page (`lines_about`, the
tail of each file)."""
from __future__ import annotations

import glob
import gzip
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator

from .errors import TraceUsageError
from ._log_lines import MAX_LINE_BYTES, usable

ID_RE = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
ID_KEYS = ("run_id", "event_id", "trace_id")


@dataclass
class Scan:
    lines: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    corrupt: int = 0  # not JSON objects
    too_long: int = 0  # longer than MAX_LINE_BYTES
    unusable: int = 0  # JSON objects whose known fields have the wrong type
    files: int = 0

    @property
    def skipped(self) -> int:
        return self.corrupt + self.too_long + self.unusable

    def skipped_text(self) -> str:
        """`skipped 3 unusable line(s): 1 not JSON, 1 longer than 4 MiB, 1 with a field of the wrong type`"""
        parts = [f"{n} {what}" for n, what in (
            (self.corrupt, "not JSON"), (self.too_long, f"longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB"),
            (self.unusable, "with a field of the wrong type")) if n]
        return f"skipped {self.skipped} unusable line(s): {', '.join(parts)}"


def log_sources(paths: list[str], default_dir: str) -> list[str]:
    """Files named or matched by globs (directories mean their *.jsonl and *.jsonl.gz), or '-'."""
    if not paths:
        paths = [default_dir]
    found: list[str] = []
    for item in paths:
        if item == "-":
            found.append("-")
            continue
        if os.path.isdir(item):
            matches = sorted(glob.glob(os.path.join(item, "*.jsonl")) + glob.glob(os.path.join(item, "*.jsonl.gz")))
            if not matches:
                raise TraceUsageError(f"no *.jsonl files in {item}")
            found.extend(matches)
            continue
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise TraceUsageError(f"no file matches {item!r}")
        for path in matches:
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise TraceUsageError(f"cannot read {path}: no such file or permission denied")
        found.extend(matches)
    return found


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb", buffering=1024 * 1024)


_CHUNK = 8 * 1024 * 1024
# A line that is neither blank nor shaped like a JSON object: counted as corrupt without parsing.
_BAD_LINE = re.compile(rb"(?m)^(?![ \t\r]*$)(?![ \t]*\{.*\}[ \t\r]*$).*$")


class _Splitter:
    """Cuts a byte stream into blocks of whole lines without ever holding more than
    MAX_LINE_BYTES of an unfinished line: a longer one is counted and read past to its newline."""

    def __init__(self, counts: Scan) -> None:
        self.counts = counts
        self.rest = b""
        self.skipping = False

    def feed(self, chunk: bytes) -> bytes:
        if self.skipping:
            end = chunk.find(b"\n")
            if end == -1:
                return b""
            chunk = chunk[end + 1:]
            self.skipping = False
        data = self.rest + chunk if self.rest else chunk
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        if len(self.rest) > MAX_LINE_BYTES:
            self.counts.too_long += 1
            self.counts.read += 1
            self.rest = b""
            self.skipping = True
        return data[:cut]

    def end(self) -> bytes:
        """The last line, when the stream does not end with a newline."""
        rest, self.rest = self.rest, b""
        return rest + b"\n" if rest else b""


def _read_blocks(handle: IO[bytes], splitter: _Splitter) -> Iterator[bytes]:
    while True:
        chunk = handle.read(_CHUNK)
        if not chunk:
            break
        block = splitter.feed(chunk)
        if block:
            yield block
    last = splitter.end()
    if last:
        yield last


def _blocks(sources: Iterable[str], counts: Scan) -> Iterator[bytes]:
    """Whole lines, several megabytes at a time."""
    for source in sources:
        handle = _open(source)
        try:
            yield from _read_blocks(handle, _Splitter(counts))
        except (OSError, EOFError) as exc:
            raise TraceUsageError(f"cannot read {source}: {exc}") from None
        finally:
            if source != "-":
                handle.close()


def lines_about(path: str, run_id: str, counts: Scan, tail_bytes: int) -> Iterator[dict[str, Any]]:
    """The usable lines that name `run_id` as theirs, from the last `tail_bytes` of `path` (a
    page view must not read gigabytes); the unusable lines that name it, and lines too long to
    read, are counted in `counts`. OSError if the file cannot be read."""
    with open(path, "rb", buffering=1024 * 1024) as handle:
        splitter = _Splitter(counts)
        size = os.fstat(handle.fileno()).st_size
        if size > tail_bytes:
            handle.seek(size - tail_bytes)
            splitter.skipping = True  # the rest of a line cut in two
        for line in _parsed(_read_blocks(handle, splitter), {run_id}, counts, whole_file=False):
            if line.get("run_id") == run_id:  # not a line naming the run elsewhere (a parent's id in a field)
                yield line


def _lines_containing(block: bytes, tokens: list[bytes]) -> list[bytes]:
    """The lines of `block` that contain any token, found with bytes.find (the tokens are rare)."""
    starts: set[int] = set()
    for token in tokens:
        position = block.find(token)
        while position != -1:
            starts.add(block.rfind(b"\n", 0, position) + 1)
            position = block.find(token, position + 1)
    lines = []
    for start in sorted(starts):
        end = block.find(b"\n", start)
        lines.append(block[start:end if end != -1 else len(block)])
    return lines


def _mentions(line: dict[str, Any], ids: set[str]) -> bool:
    if any(line.get(k) in ids for k in ID_KEYS):
        return True
    runs = line.get("runs")
    return isinstance(runs, list) and any(isinstance(r, dict) and r.get("run_id") in ids for r in runs)


def _learn(line: dict[str, Any], ids: set[str]) -> None:
    for key in ID_KEYS:
        if isinstance(line.get(key), str):
            ids.add(line[key])


def scan(sources: list[str], wanted: str) -> Scan:
    """Every line about `wanted`. Files are read twice (find the trace id, then collect every
    line of that trace); stdin once, learning related ids as they appear."""
    result = Scan(files=len(sources))
    ids = {wanted}
    if "-" not in sources and len(wanted) != 32:
        first_pass = Scan()
        for line in _parsed(_blocks(sources, first_pass), ids, first_pass):
            if isinstance(line.get("trace_id"), str):
                ids.add(line["trace_id"])
                break
    for line in _parsed(_blocks(sources, result), ids, result):
        _learn(line, ids)
        result.lines.append(line)
    result.lines.sort(key=lambda l: str(l.get("timestamp", "")))
    return result


def _parsed(blocks: Iterator[bytes], ids: set[str], counts: Scan, whole_file: bool = True
            ) -> Iterator[dict[str, Any]]:
    """The usable lines of `blocks` that mention one of `ids`; what is unusable is counted: in
    the whole file (`whole_file`), else only among the lines that contain one of `ids`."""
    for block in blocks:
        lines = block.count(b"\n")
        counts.read += lines
        well_formed = block.startswith(b"{") + block.count(b"\n{") - block.endswith(b"\n{")
        if whole_file and (well_formed != lines or block.count(b"}\n") != lines):
            counts.corrupt += len(_BAD_LINE.findall(block))  # the slow, exact count, only when needed
        for raw in _lines_containing(block, [i.encode() for i in ids]):
            stripped = raw.strip()
            if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
                counts.corrupt += not whole_file  # with the whole file, counted above
                continue
            if len(stripped) > MAX_LINE_BYTES:
                counts.too_long += 1
                continue
            try:
                line = json.loads(stripped)
            except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; nesting too deep
                counts.corrupt += 1
                continue
            if not usable(line):
                counts.unusable += 1
                continue
            if _mentions(line, ids):
                yield line


def follow_files(sources: list[str], wanted: str) -> Iterator[tuple[list[dict[str, Any]], Scan]]:
    """Yields (all lines so far, the counts) each time new lines about `wanted` arrive (and an
    empty list when none did). New bytes are read in blocks; an unfinished line waits, in memory,
    for its end (up to MAX_LINE_BYTES: a longer one is skipped)."""
    offsets = {path: 0 for path in sources}
    counts = Scan(files=len(sources))
    splitters = {path: _Splitter(counts) for path in sources}
    ids = {wanted}
    lines: list[dict[str, Any]] = []
    while True:
        new = False
        for path in sources:
            if not os.path.exists(path):
                continue
            with _open(path) as handle:
                handle.seek(offsets[path])
                while True:
                    chunk = handle.read(_CHUNK)
                    if not chunk:
                        break
                    offsets[path] += len(chunk)
                    block = splitters[path].feed(chunk)
                    for line in _parsed(iter([block] if block else []), ids, counts):
                        _learn(line, ids)
                        lines.append(line)
                        new = True
        if new:
            lines.sort(key=lambda l: str(l.get("timestamp", "")))
            yield lines, counts
        else:
            yield [], counts
