"""One logging set-up for every process: JSON lines to `<log dir>/<process>.jsonl`, and a copy on
stderr (the same JSON, or a readable view on a TTY).

Two paths reach the file, because they cost very different amounts:

- Our lines (`structlog.get_logger(name)`, `get_logger`) take structlog's native path: a filtering
  bound logger (a line below the level is a no-op method), the processors once, one orjson render,
  and one `os.write` per destination by `_LineWriter` (`pipeline._log_output`). No stdlib `Logger.handle`, no formatter.
- Third-party lines (Django, Dramatiq, pika, APScheduler, gunicorn) arrive as stdlib records at
  the root logger, where `_StdlibHandler` runs them through structlog's `ProcessorFormatter`
  (foreign pre-chain) into the same JSON shape, written through the same descriptor.

Both write through `_output`, which owns the file descriptor, so set-up may run again (Django does,
in runserver and some commands) without a line being lost or written to a stale descriptor.

`line_observers` is the cheap hook for whoever wants to count lines (tests/bench/hotpath.py): each
callable gets every event dict about to be written, ours and third parties', just before render.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import structlog
from django.db import connection, transaction

from . import conf
from ._log_output import _LineWriterFactory, _output
from .metrics._processor import observe as _observe_metrics
from ._redaction import add_secret_keys, redactor
from ._redaction import redact as redact, redact_text as redact_text  # re-exported

# Every callable here gets each event dict just before it is rendered (after redaction), once per
# line written, ours and third parties' alike. Empty by default: costs one truth test per line.
line_observers: list[Callable[[dict], None]] = []


def process_name() -> str:
    """The kind of process we are, which names the log file: web, worker, scheduler or the command."""
    if conf.environment("PIPELINE_PROCESS"):
        return conf.environment("PIPELINE_PROCESS")
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0.startswith("dramatiq"):
        return "worker"
    if argv0 in ("manage.py", "django-admin") and len(sys.argv) > 1:
        command = sys.argv[1]
        return {"runserver": "web", "runscheduler": "scheduler", "rundramatiq": "worker"}.get(command, command)
    if "gunicorn" in argv0 or "uvicorn" in argv0:
        return "web"
    if "pytest" in argv0 or "py.test" in argv0:
        return "test"
    return "python"


# --- redaction ---------------------------------------------------------------------------------------
# One implementation (pipeline/_redaction.py) for log lines, stored errors and shown payloads; these
# names stay importable from here for the code that used them before.
_redact_processor = redactor  # runs last before rendering: on the final values, tracebacks included


# --- the shared processors -----------------------------------------------------------------------------
_PROCESS = process_name()
_HOST = socket.gethostname()


def _add_process(_logger: Any, _name: str, event_dict: dict) -> dict:
    event_dict.setdefault("process", _PROCESS)
    event_dict.setdefault("pid", os.getpid())  # per line: workers fork after set-up
    event_dict.setdefault("host", _HOST)
    return event_dict


def _drop_color_message(_logger: Any, _name: str, event_dict: dict) -> dict:
    event_dict.pop("color_message", None)  # uvicorn's duplicate of the message, with ANSI codes
    return event_dict


_clock: tuple[int, str] = (0, "")  # (whole second, its ISO 8601 text): formatted once a second


def _add_timestamp(_logger: Any, _name: str, event_dict: dict) -> dict:
    """`timestamp`, ISO 8601 in UTC with microseconds (`2026-01-31T12:00:00.123456Z`), the shape
    structlog's TimeStamper(fmt="iso", utc=True) gave, at a quarter of its cost."""
    global _clock
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    clock = _clock
    if clock[0] != seconds:
        clock = _clock = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    event_dict["timestamp"] = f"{clock[1]}.{nanos // 1000:06d}Z"
    return event_dict


try:  # structlog's own registry of the ContextVars behind bind_contextvars (one per key ever bound)
    from structlog.contextvars import STRUCTLOG_KEY_PREFIX as _PREFIX, _CONTEXT_VARS
except ImportError:  # pragma: no cover - a structlog without it: its own processor below
    _CONTEXT_VARS = None
    _PREFIX = "structlog_"
_PREFIX_LENGTH = len(_PREFIX)


def _merge_contextvars(logger: Any, name: str, event_dict: dict) -> dict:
    """structlog's `merge_contextvars`, at a third of its cost (2.5 vs 7.7 µs a line): it copies
    the whole context and walks every variable in it (Django's and asgiref's too) to find its
    own by name; this reads its own variables, the few keys ever bound, directly."""
    if _CONTEXT_VARS is None:  # pragma: no cover
        return structlog.contextvars.merge_contextvars(logger, name, event_dict)
    for key, var in tuple(_CONTEXT_VARS.items()):  # (a copy: another thread may bind a new key meanwhile)
        value = var.get(Ellipsis)
        if value is not Ellipsis:
            event_dict.setdefault(key[_PREFIX_LENGTH:], value)
    return event_dict


def _notify_observers(_logger: Any, _name: str, event_dict: dict) -> dict:
    for observer in line_observers:
        try:
            observer(event_dict)
        except Exception:  # pragma: no cover - counting must never break logging
            pass
    return event_dict


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME  # datetimes as str(), as before


def _dumps(event_dict: dict) -> bytes:
    """orjson (compact, UTF-8); the standard library when orjson refuses (integers over 64 bits,
    lone surrogates), so an odd value never costs the line."""
    try:
        return orjson.dumps(event_dict, default=str, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        return json.dumps(event_dict, default=str, separators=(",", ":")).encode("utf-8", "replace")
    except Exception:  # whatever else: every value as its repr, redacted again (it is new text)
        return json.dumps({str(k): redact_text(repr(v)) for k, v in event_dict.items()}, separators=(",", ":")).encode()


def _render(logger: Any, method: str, event_dict: dict) -> Any:
    """The native path's last processor: the JSON line, rendered once; in console mode also the
    readable view (ConsoleRenderer), passed to `_LineWriter` as a keyword."""
    line = _dumps(event_dict)
    if _output.console_renderer is None:
        return line
    return (line,), {"console": _output.console_renderer(logger, method, event_dict)}


def _render_text(_logger: Any, _method: str, event_dict: dict) -> str:
    return _dumps(event_dict).decode("utf-8")  # ProcessorFormatter wants text


# The native chain. One list object for the life of the process: loggers cached on first use keep a
# reference to it, and structlog.testing.capture_logs() swaps its contents in place.
_PROCESSORS: list[Any] = []


def _native_chain() -> list[Any]:
    return [
        _merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_timestamp,
        _add_process,
        _observe_metrics,  # Prometheus counters from the transition lines (pipeline/metrics/_processor.py): ours only
        # exc_info=True -> `exception` (the traceback), rendered before redaction so it is redacted too.
        structlog.processors.format_exc_info,
        _redact_processor,  # last before the line is rendered: what it leaves is what is written
        _notify_observers,
        _render,
    ]


class _StdlibHandler(logging.Handler):
    """The root logger's only handler: third-party records in the same JSON shape (formatted once),
    plus the console view in console mode, written through `_output`."""

    def __init__(self, json_formatter: logging.Formatter, console_formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.setFormatter(json_formatter)
        self.console_formatter = console_formatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode("utf-8", "replace")
            console = self.console_formatter.format(record) if self.console_formatter is not None else None
            _output.write(line, console)
        except Exception:  # pragma: no cover - logging must never break the caller
            self.handleError(record)


def _console_format() -> str:
    """PIPELINE_LOG_FORMAT: auto (console view on a TTY, else JSON), console, json or none."""
    wanted = conf.environment("PIPELINE_LOG_FORMAT").strip().lower()
    if wanted == "auto":
        return "console" if _stderr_is_tty() else "json"
    return wanted if wanted in ("console", "none") else "json"


def _stderr_is_tty() -> bool:
    try:
        return os.isatty(2)
    except OSError:
        return False


def _level_number(level: str | int) -> int:
    """A level name or number, as one of the levels structlog's filtering loggers know (rounded up;
    INFO when it is not a level at all)."""
    number = level if isinstance(level, int) else logging.getLevelName(str(level).strip().upper())
    if not isinstance(number, int):
        return logging.INFO
    return min((known for known in (0, 10, 20, 30, 40, 50) if known >= number), default=logging.CRITICAL)


def configure(process: str | None = None, log_dir: str | None = None, level: str | int = "INFO") -> None:
    """Sets up structlog's native path and the standard library's root logger for this process;
    safe to call again. The level of a logger is fixed when it is first used (structlog caches it):
    set it before logging, as Django's set-up does with PIPELINE_LOG_LEVEL."""
    global _PROCESS
    _PROCESS = process or process_name()
    log_dir = log_dir or conf.environment("PIPELINE_LOG_DIR")
    level_number = _level_number(level)

    console = _console_format()
    _output.console = console
    _output.console_renderer = (
        structlog.dev.ConsoleRenderer(colors=_stderr_is_tty(), sort_keys=False) if console == "console" else None
    )
    _output.set_path(Path(log_dir) / f"{_PROCESS}.jsonl")

    _PROCESSORS[:] = _native_chain()
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=_LineWriterFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        cache_logger_on_first_use=True,
    )

    foreign = [
        structlog.stdlib.ExtraAdder(),
        _merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_timestamp,
        _add_process,
        _drop_color_message,
    ]
    prepare = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    json_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign, processors=[*prepare, _notify_observers, _render_text]
    )
    console_formatter = (
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=foreign, processors=[*prepare, _output.console_renderer])
        if console == "console"
        else None
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(_StdlibHandler(json_formatter, console_formatter))
    root.setLevel(level_number)
    # pika logs every step of a failed connection at ERROR, with tracebacks; the broker's
    # unavailability is reported once, by us and by Dramatiq, so its own lines only add noise.
    for name, lib_level in (("pika", "CRITICAL"), ("apscheduler.executors", "WARNING"), ("django.db", "INFO")):
        logging.getLogger(name).setLevel(lib_level)


def configure_from_django(logging_settings: dict | None) -> None:
    """LOGGING_CONFIG entry point: Django hands us settings.LOGGING during django.setup()."""
    options = logging_settings or {}
    add_secret_keys(tuple(conf.get("PIPELINE_REDACT_KEYS")))
    configure(log_dir=options.get("log_dir"), level=options.get("level", "INFO"))


def info_on_commit(logger: Any, event: str, **fields: Any) -> None:
    """Logs a transition once the transaction recording it commits (at once outside one), so
    the logs never tell of a change that was rolled back."""
    if connection.in_atomic_block:
        transaction.on_commit(lambda: logger.info(event, **fields))
    else:
        logger.info(event, **fields)


def get_logger(name: str = "pipeline") -> Any:
    return structlog.get_logger(name)
