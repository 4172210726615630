"""Workers: one multiprocess directory per `rundramatiq` master, shared by its worker processes,
made fresh when the master starts and cleared of those whose master is gone."""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from .._files import open_private, private_dir, write_private
from ._settings import metrics_base_dir


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_metrics_dir(master_pid: int | None = None) -> Path:
    return metrics_base_dir() / f"worker-{master_pid or os.getppid()}"


def prepare_worker_metrics_dir(master_pid: int) -> Path:
    """The directory of this master's worker processes: made fresh at the master's first worker
    boot (a directory left by a dead master, or by an earlier process with the same pid, is wiped)."""
    base = private_dir(metrics_base_dir())
    here = worker_metrics_dir(master_pid)
    started = _start_time(master_pid) or "unknown"
    with os.fdopen(open_private(base / ".lock", os.O_WRONLY | os.O_APPEND), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for old in base.glob("worker-*"):
                pid = old.name.removeprefix("worker-")
                marker = old / ".master"
                alive = pid.isdigit() and _start_time(int(pid)) is not None
                same = marker.exists() and marker.read_text() == (_start_time(int(pid)) if alive else None)
                if old != here and not (alive and same):
                    shutil.rmtree(old, ignore_errors=True)
            marker = here / ".master"
            if here.exists() and not (marker.exists() and marker.read_text() == started):
                shutil.rmtree(here, ignore_errors=True)
            if not here.exists():
                private_dir(here)
                write_private(marker, started)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return here
