"""Files we keep under var/ are the operator's alone: the SQLite database and its -wal/-shm, the log
files (they hold customer emails), the secret key, the development password and API token, the
writer's lock file and the metrics folders.

Each is created owner-only (files 0600, folders 0700) by the very system call that creates it
(open(2) or mkdir(2) with that mode; the umask can only take bits away), never written and then
chmod-ed, so there is no moment in which another local user could open it. A file with contents
is written beside its final name and moved (or linked) into place, so a reader never sees it
half-written. Files and folders that already exist keep the mode they have: that is the
operator's choice (`chmod -R go= var/` tightens what an older version left behind).

Imported by web/settings.py before Django is set up: standard library only.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["FILE_MODE", "DIR_MODE", "private_dir", "open_private", "touch_private", "write_private",
           "create_private", "private_sqlite_file"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike) -> Path:
    """`mkdir -p` in which every folder it creates is 0700 (Path.mkdir(parents=True) makes the
    parents with the default mode)."""
    path = Path(path)
    missing: list[Path] = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            pass
    return path


def open_private(path: str | os.PathLike, flags: int) -> int:
    """os.open that creates the file 0600 if it is missing (its folder 0700)."""
    private_dir(Path(path).parent)
    return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


def touch_private(path: str | os.PathLike) -> Path:
    """The file, created empty and 0600 if missing (an empty file is a valid empty SQLite database)."""
    os.close(open_private(path, os.O_WRONLY))
    return Path(path)


def _write_beside(path: Path, text: str) -> Path:
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def write_private(path: str | os.PathLike, text: str) -> None:
    """Writes (or replaces) a 0600 file with `text`, atomically."""
    path = Path(path)
    temporary = _write_beside(path, text)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def create_private(path: str | os.PathLike, text: str) -> bool:
    """Creates a 0600 file with `text` unless it exists (then it is left alone): True if this call
    created it. Two processes racing both read the same, whole contents afterwards."""
    path = Path(path)
    if path.exists():
        return False
    temporary = _write_beside(path, text)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)


def private_sqlite_file(name: str | os.PathLike) -> None:
    """Creates a SQLite database file 0600 before SQLite does (SQLite would create it with the
    umask's default): its -wal, -shm and journal files then take the database file's mode."""
    text = str(name)
    if not text or text == ":memory:" or text.startswith("file:") or "mode=memory" in text:
        return
    touch_private(text)
