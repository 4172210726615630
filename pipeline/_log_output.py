"""Where the engine's log lines go: one file descriptor per process (`_output`), owned here rather
than by a logging handler, and the structlog logger at the end of the native path (`_LineWriter`)
that hands each rendered line to it. Set up by `pipeline.logging.configure`."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from structlog._frames import _find_first_app_frame_and_name

from ._files import open_private


class _Output:
    """The log file's descriptor (O_APPEND, so processes sharing the file never tear lines; it stays
    open: rotate with logrotate's `copytruncate`, see infra/README.md) and the console copy on fd 2.

    The descriptor belongs to this module, not to a logging handler: `logging.config.dictConfig()`
    closes every handler it finds (Django runs it again in some commands), and that must not close
    the file under our own lines. `close()` forgets the descriptor and the next line reopens it; a
    new path is swapped in with dup2, so a line being written meanwhile never sees a stale number."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.fd: int | None = None
        self.console = "json"  # json | console | none
        self.console_renderer: Any = None

    def _open(self) -> int:
        assert self.path is not None
        return open_private(self.path, os.O_WRONLY | os.O_APPEND)  # 0600 (lines hold customer data), folder 0700

    def set_path(self, path: Path) -> None:
        if path == self.path and self.fd is not None:
            return
        self.path = path
        fd = self._open()
        if self.fd is None:
            self.fd = fd
        else:
            os.dup2(fd, self.fd, inheritable=False)
            os.close(fd)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def write(self, line: bytes, console: str | None = None) -> None:
        """One line: one write(2) to the file, and one to stderr (the same bytes, or the console
        view when there is one). Never raises: logging must not break the caller."""
        data = line + b"\n"
        try:
            fd = self.fd
            if fd is None:
                if self.path is None:
                    return
                fd = self.fd = self._open()
            _write_all(fd, data)
        except OSError as exc:
            if exc.errno == errno.EBADF and self.path is not None:  # closed behind our back: reopen once
                try:
                    self.fd = self._open()
                    _write_all(self.fd, data)
                except OSError:
                    pass
        if self.console == "none":
            return
        try:
            _write_all(2, data if console is None else (console + "\n").encode("utf-8", "replace"))
        except OSError:  # no stderr (daemons), or a full non-blocking pipe
            pass


def _write_all(fd: int, data: bytes) -> None:
    while data:  # one write(2), unless it is cut short (a signal, a full disk)
        written = os.write(fd, data)
        if written <= 0:
            return
        data = data[written:]


_output = _Output()


class _LineWriter:
    """The structlog logger at the end of the native path: gets the rendered line (and the console
    view, in console mode) and hands it to `_output`. Whatever the method name, it writes."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name  # for structlog.stdlib.add_logger_name: the `logger` key

    def msg(self, line: bytes, console: str | None = None) -> None:
        _output.write(line, console)

    debug = info = warning = warn = error = err = critical = fatal = exception = failure = log = msg


class _LineWriterFactory:
    """structlog's logger factory: one `_LineWriter` per logger name. A logger asked for without a
    name is named after the module that asked, as the stdlib factory did."""

    def __init__(self) -> None:
        self._writers: dict[str, _LineWriter] = {}

    def __call__(self, *args: Any) -> _LineWriter:
        name = args[0] if args and args[0] else _find_first_app_frame_and_name([__name__, "pipeline.logging"])[1]
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = _LineWriter(name)
        return writer
