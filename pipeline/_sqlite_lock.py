"""The lock file the group-commit writers of every process on a host queue on (SQLite only)."""
from __future__ import annotations

import fcntl
import os


class CrossProcessLock:
    """SQLite: the writers of all processes queue on an flock(2) of a lock file beside the
    database, and the kernel wakes the next one the moment it is free. SQLite's own busy handler
    sleeps 5, 10, 25... 100 ms between tries, far longer than a batch holds the lock: with two
    worker processes and a producer, that sleeping was most of the time a run took. For other
    databases (no lock file) acquiring and releasing do nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_database(cls, settings_dict: dict) -> "CrossProcessLock":
        if "sqlite" not in settings_dict.get("ENGINE", ""):
            return cls(None)
        name = str(settings_dict.get("NAME") or "")
        if not name or ":memory:" in name or name.startswith("file:"):
            return cls(None)
        return cls(name + "-writer.lock")

    def acquire(self) -> None:
        try:
            if self._fd is None and self.path is not None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:  # no lock file (its folder went away): SQLite's own lock still holds
            self._fd = None

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError:
                self._fd = None
