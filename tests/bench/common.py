"""Helpers of the benchmark driver: child processes, CPU and memory accounting, AMQP queues, stats."""
from __future__ import annotations

import json
import math
import os
import queue
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

import pika

try:  # the `bench` extra has psutil; `make test` (dev extra only) falls back to reading /proc
    import psutil
except ImportError:  # pragma: no cover - depends on the installed extras
    psutil = None

ROOT = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    pass


# --- child processes ----------------------------------------------------------------------------

class Child:
    """A child in its own session (so the whole group can be signalled), output to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, *, pipe_stdin: bool = False,
                 pipe_stdout: bool = False) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.output_path = log_dir / f"{name}.out"
        self._out = open(self.output_path, "ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env,
            stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else self._out,
            stderr=self._out,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.output_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def terminate(self) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # Children of a stopped master may outlive it: sweep the whole group.
        self.signal_group(signal.SIGKILL)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._out.close()


def stop_all(children: Iterable[Child], timeout: float = 15) -> None:
    children = [c for c in children if c is not None]
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait_stopped(max(0.5, deadline - time.monotonic()))


class Producer:
    """The long-lived producer process of one system (`python -m tests.bench.producer`), driven by
    JSON lines on its stdin; it answers one JSON line per command on its stdout."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.info: dict[str, Any] = {}
        self.pending: dict | None = None

    def _read(self) -> None:
        for raw in self.child.popen.stdout:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put(None)

    def receive(self, timeout: float) -> dict:
        if self.pending is not None:
            reply, self.pending = self.pending, None
            return reply
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"producer {self.child.name}: no answer within {timeout:.0f}s") from None
            if line is None:
                raise BenchError(f"producer {self.child.name} exited; its output:\n{self.child.tail()}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def check_failed(self) -> None:
        """Raises at once if the producer already answered with an error (instead of waiting for
        done-signals that will never come); keeps a successful answer for `receive`."""
        if self.pending is not None:
            return
        try:
            line = self.lines.get_nowait()
        except queue.Empty:
            return
        if line is None:
            raise BenchError(f"producer {self.child.name} exited; its output:\n{self.child.tail()}")
        line = line.strip()
        if line.startswith("{"):
            reply = json.loads(line)
            if not reply.get("ok", True):
                raise BenchError(f"producer {self.child.name}: {reply.get('error')}\n{reply.get('traceback', '')}")
            self.pending = reply

    def replies(self) -> list[dict]:
        """Answers already received (without waiting); raises on an error answer."""
        out = []
        if self.pending is not None:
            out.append(self.pending)
            self.pending = None
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                raise BenchError(f"producer {self.child.name} exited; its output:\n{self.child.tail()}")
            line = line.strip()
            if line.startswith("{"):
                reply = json.loads(line)
                if not reply.get("ok", True):
                    raise BenchError(f"producer {self.child.name}: {reply.get('error')}\n{reply.get('traceback', '')}")
                out.append(reply)

    def send(self, command: dict) -> None:
        try:
            self.child.popen.stdin.write((json.dumps(command) + "\n").encode())
            self.child.popen.stdin.flush()
        except (BrokenPipeError, OSError):
            raise BenchError(f"producer {self.child.name} is gone; its output:\n{self.child.tail()}") from None

    def call(self, command: dict, timeout: float) -> dict:
        self.send(command)
        reply = self.receive(timeout)
        if not reply.get("ok", True):
            raise BenchError(f"producer {self.child.name}: {reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def wait_ready(self, timeout: float) -> dict:
        self.info = self.receive(timeout)
        return self.info


# --- CPU and memory -----------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: fields[0] is the state, fields[1] the ppid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _tree(root: int) -> list[int]:
    if psutil is not None:
        try:
            proc = psutil.Process(root)
            return [root, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                kids.setdefault(int(fields[1]), []).append(int(entry.name))
    if _stat_fields(root) is None:
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _cpu(pid: int) -> float | None:
    """utime + stime + cutime + cstime of one process, in seconds."""
    if psutil is not None:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            return None
        return t.user + t.system + t.children_user + t.children_system
    fields = _stat_fields(pid)
    if not fields:
        return None
    return sum(int(x) for x in fields[11:15]) / _TICKS


def tree_cpu_seconds(root_pids: Iterable[int]) -> float:
    """User+system CPU of live processes under the roots, plus what their reaped children used:
    a process that exits between two readings keeps counting, in its parent's children times."""
    total = 0.0
    seen: set[int] = set()
    for root in root_pids:
        if root is None:
            continue
        for pid in _tree(root):
            if pid in seen:
                continue
            seen.add(pid)
            total += _cpu(pid) or 0.0
    return total


def _rss(pid: int) -> float | None:
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            return None
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def rss_mb(pid: int, with_children: bool = False) -> float:
    pids = _tree(pid) if with_children else [pid]
    values = [v for v in (_rss(p) for p in pids) if v is not None]
    return sum(values) / (1024 * 1024) if values else float("nan")


def direct_children(pid: int) -> list[int]:
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=False)]
        except psutil.NoSuchProcess:
            return []
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def listening_pid(port: int) -> int | None:
    """The pid of the local process that listens on `port` (the broker, PostgreSQL), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd) in targets:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


# --- AMQP ---------------------------------------------------------------------------------------

def redacted(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 5672}{parsed.path or '/'}"


def amqp_connection(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.heartbeat = 0
    params.connection_attempts = 3
    params.retry_delay = 1
    return pika.BlockingConnection(params)


def queue_consumers(url: str, names: list[str]) -> dict[str, int]:
    """Consumers per queue (0 when the queue does not exist yet)."""
    result = {}
    connection = amqp_connection(url)
    try:
        for name in names:
            channel = connection.channel()
            try:
                result[name] = channel.queue_declare(queue=name, passive=True).method.consumer_count
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                result[name] = 0
    finally:
        connection.close()
    return result


def declare_done_queue(channel, name: str) -> None:
    channel.queue_declare(queue=name, durable=False, auto_delete=False)


def drain_done(channel, name: str, count: int, stall_timeout: float, on_idle=None) -> int:
    """Consumes `count` done-signals; raises after `stall_timeout` seconds without one (or when
    `on_idle`, called while none arrives, raises)."""
    got = 0
    last = time.monotonic()
    for method, _props, _body in channel.consume(name, auto_ack=True, inactivity_timeout=0.5):
        if method is None:
            if on_idle is not None:
                try:
                    on_idle()
                except BenchError:
                    channel.cancel()
                    raise
            if time.monotonic() - last > stall_timeout:
                channel.cancel()
                raise BenchError(f"{got}/{count} runs done, none for {stall_timeout:.0f}s")
            continue
        got += 1
        last = time.monotonic()
        if got >= count:
            break
    channel.cancel()
    return got


def broker_version(url: str) -> dict[str, str]:
    connection = amqp_connection(url)
    try:
        props = connection._impl.server_properties  # noqa: SLF001 - pika keeps them there
        decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        return {"product": decode(props.get("product", "")), "version": decode(props.get("version", "")),
                "platform": decode(props.get("platform", ""))}
    finally:
        connection.close()


# --- stats --------------------------------------------------------------------------------------

def spread(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": [round(v, 4) for v in values]}


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    f, c = math.floor(k), math.ceil(k)
    if f == c:
        return sorted_values[int(k)]
    return sorted_values[f] + (sorted_values[c] - sorted_values[f]) * (k - f)
