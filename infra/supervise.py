#!/usr/bin/env python3
"""`make run`'s process manager: runs the processes of a Procfile, restarts the one that dies,
and stops them all gracefully on Ctrl-C.

Why not honcho: honcho signals each process's whole process group, and Dramatiq's master forwards
the signal to its worker processes again; a worker that gets two SIGTERMs stops at once instead of
draining (`pipeline/middleware/_drain.py`). And honcho stops every process when one dies. Here:

- each process starts in a session (and process group) of its own, so neither the terminal's
  Ctrl-C nor anything sent to this supervisor reaches it directly; on stop it gets exactly one
  SIGTERM, sent to its leader (Dramatiq's master forwards that once to its workers, which drain);
- when the supervisor runs in the foreground of a terminal it takes the terminal's foreground
  for its own process group, so Ctrl-C reaches it alone (not `make`, which would otherwise die of
  the SIGINT and print `Error 130`), and gives the terminal back before it exits;
- a process that exits while the stack is up is restarted after a backoff (1 s, doubling up to
  30 s; back to 1 s once it has run for 30 s), with a line saying so; what is left of its process
  group gets one SIGTERM first; the other processes keep running;
- SIGINT or SIGTERM stops every process (one SIGTERM each), waits up to `--stop-timeout` seconds
  for all of them, SIGKILLs any group still alive after that, then runs the `--finally` command
  (the local broker's stop: it stops last) and exits 0 (1 if something had to be killed).

Standard library only: it runs before, and outside, Django.

    infra/supervise.py -f infra/Procfile.dev [--stop-timeout 40] [--finally 'infra/rabbitmq.sh stop']
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0
_LINE_RE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@dataclass
class Entry:
    """One Procfile line and the process currently running it."""

    name: str
    command: str
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = INITIAL_BACKOFF
    restart_at: float | None = None
    old_groups: list[int] = field(default_factory=list)


def parse_procfile(text: str) -> list[Entry]:
    """`name: command` lines; blank lines and `#` comments are skipped, anything else is an error."""
    entries: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise ValueError(f"line {number}: expected 'name: command', got {raw!r}")
        if any(e.name == match.group(1) for e in entries):
            raise ValueError(f"line {number}: process {match.group(1)!r} is named twice")
        entries.append(Entry(match.group(1), match.group(2)))
    if not entries:
        raise ValueError("no processes")
    return entries


class Output:
    """Interleaves every process's lines on our stdout, each prefixed with time and name."""

    def __init__(self, names: list[str]) -> None:
        self._lock = threading.Lock()
        self._width = max(len(n) for n in [*names, "supervisor"])

    def line(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            sys.stdout.write(f"{stamp} {name.ljust(self._width)} | {text}\n")
            sys.stdout.flush()

    def say(self, text: str) -> None:
        self.line("supervisor", text)

    def pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.line(name, raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still there (tests/test_run_stack.py asks it too)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Terminal:
    """Takes the controlling terminal's foreground for our own process group while we run."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._previous: int | None = None

    def take(self) -> None:
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return  # no terminal (CI, tests, a service): signals come from whoever started us
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                os.close(fd)
                return  # started in the background: leave the terminal alone
            previous = os.getpgrp()
            if os.getpid() != previous:
                os.setpgid(0, 0)
            self._tcsetpgrp(fd, os.getpgrp())
            self._fd, self._previous = fd, previous
        except OSError:
            os.close(fd)

    def give_back(self) -> None:
        if self._fd is None:
            return
        try:
            self._tcsetpgrp(self._fd, self._previous)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    @staticmethod
    def _tcsetpgrp(fd: int, pgrp: int | None) -> None:
        # A process group that is not (or no longer) in the foreground gets SIGTTOU for this.
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(fd, pgrp)
        finally:
            signal.signal(signal.SIGTTOU, previous)


class Supervisor:
    def __init__(self, entries: list[Entry], *, stop_timeout: float, finally_command: str | None,
                 cwd: Path) -> None:
        self.entries = entries
        self.stop_timeout = stop_timeout
        self.finally_command = finally_command
        self.cwd = cwd
        self.out = Output([e.name for e in entries])
        self._stop = threading.Event()
        self._signal_name = ""

    def _start(self, entry: Entry) -> None:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {entry.command}"], cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        entry.popen, entry.started_at, entry.restart_at = popen, time.monotonic(), None
        threading.Thread(target=self.out.pump, args=(entry.name, popen.stdout), daemon=True).start()
        self.out.say(f"{entry.name} started (pid {popen.pid})")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signal_name = signal.Signals(signum).name
        self._stop.set()

    def run(self) -> int:
        terminal = _Terminal()
        terminal.take()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            for entry in self.entries:
                self._start(entry)
            while not self._stop.wait(0.2):
                self._watch()
            self.out.say(f"{self._signal_name or 'stop'}: stopping {', '.join(e.name for e in self.entries)} "
                         f"(one SIGTERM each, up to {self.stop_timeout:g} s)")
            clean = self._stop_all()
            self._run_finally()
            self.out.say("stopped" if clean else "stopped (some processes had to be killed)")
            return 0 if clean else 1
        finally:
            terminal.give_back()

    def _watch(self) -> None:
        now = time.monotonic()
        for entry in self.entries:
            if entry.popen is not None and entry.popen.poll() is not None:
                code, ran = entry.popen.returncode, now - entry.started_at
                entry.old_groups.append(entry.popen.pid)
                _signal_group(entry.popen.pid, signal.SIGTERM)  # its orphans (once): they drain too
                entry.popen = None
                if ran >= STABLE_AFTER:
                    entry.backoff = INITIAL_BACKOFF
                entry.restart_at = now + entry.backoff
                entry.restarts += 1
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
                self.out.say(f"{entry.name} exited ({how}) after {ran:.1f} s; restarting in {entry.backoff:g} s "
                             f"(restart {entry.restarts}); the other processes keep running")
                entry.backoff = min(entry.backoff * 2, MAX_BACKOFF)
            elif entry.popen is None and entry.restart_at is not None and now >= entry.restart_at:
                self._start(entry)
            entry.old_groups = [g for g in entry.old_groups if group_alive(g)]

    def _stop_all(self) -> bool:
        groups: dict[int, str] = {}
        for entry in self.entries:
            if entry.popen is not None and entry.popen.poll() is None:
                entry.popen.send_signal(signal.SIGTERM)  # the leader only: it stops its own children
                groups[entry.popen.pid] = entry.name
            for pgid in entry.old_groups:
                groups[pgid] = entry.name  # already sent their SIGTERM when their leader died
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            for entry in self.entries:
                if entry.popen is not None:
                    entry.popen.poll()  # reap
            if not any(group_alive(pgid) for pgid in groups):
                return True
            time.sleep(0.1)
        for pgid, name in groups.items():
            if group_alive(pgid):
                self.out.say(f"{name} still running after {self.stop_timeout:g} s: killing its process group")
                _signal_group(pgid, signal.SIGKILL)
        for entry in self.entries:
            if entry.popen is not None:
                try:
                    entry.popen.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        return False

    def _run_finally(self) -> None:
        if not self.finally_command:
            return
        self.out.say(f"running: {self.finally_command}")
        done = subprocess.run(["/bin/sh", "-c", self.finally_command], cwd=self.cwd, stdin=subprocess.DEVNULL,
                              start_new_session=True)
        if done.returncode != 0:
            self.out.say(f"{self.finally_command!r} exited with code {done.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--procfile", default="Procfile", help="the processes, one 'name: command' a line")
    parser.add_argument("--stop-timeout", type=float, default=float(os.environ.get("STACK_STOP_TIMEOUT", 40)),
                        help="seconds every process gets to stop after its SIGTERM (default 40, STACK_STOP_TIMEOUT)")
    parser.add_argument("--finally", dest="finally_command", help="a command run after every process stopped")
    parser.add_argument("-d", "--directory", default=".", help="the processes' working directory")
    args = parser.parse_args(argv)
    if args.stop_timeout <= 0:
        parser.error("--stop-timeout must be positive")
    try:
        entries = parse_procfile(Path(args.procfile).read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"{args.procfile}: {exc}")
    return Supervisor(entries, stop_timeout=args.stop_timeout, finally_command=args.finally_command,
                      cwd=Path(args.directory)).run()


if __name__ == "__main__":
    sys.exit(main())
