"""One logging set-up for every process: structlog in front, the standard library's loggers
(Django, Dramatiq, pika, APScheduler) through the same processors, JSON lines to
`<log dir>/<process>.jsonl` and a readable console on stderr."""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

from .metrics import observe as _observe_metrics

_SECRET_KEY_PATTERN = r"pass(word|wd)?|secret|token|authorization|api[_-]?key|card[_-]?number|cvv|cvc|cookie"
_MASK = "[redacted]"
_secret_key_re = re.compile(_SECRET_KEY_PATTERN, re.IGNORECASE)


def process_name() -> str:
    """The kind of process we are, which names the log file: web, worker, scheduler or the command."""
    if os.environ.get("PIPELINE_PROCESS"):
        return os.environ["PIPELINE_PROCESS"]
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


def add_secret_keys(keys: tuple[str, ...] | list[str]) -> None:
    """Extends the set of key names whose values never reach a log line."""
    global _secret_key_re
    extra = "|".join(re.escape(k) for k in keys if k)
    _secret_key_re = re.compile(_SECRET_KEY_PATTERN + (f"|{extra}" if extra else ""), re.IGNORECASE)


def redact(value: Any, depth: int = 0) -> Any:
    """Masks values under secret-looking keys, at any depth of dicts and lists."""
    if depth > 12:
        return value
    if isinstance(value, dict):
        return {
            k: (_MASK if isinstance(k, str) and _secret_key_re.search(k) else redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str) and depth > 0:
        return redact_text(value)
    return value


_CARD_RE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def redact_text(text: str) -> str:
    """Masks `key=value`, `key: value` and `"key": "value"` pairs, and card-like numbers, inside
    free text such as exception messages."""
    if not text:
        return text
    text = _CARD_RE.sub(_MASK, text)
    if not _secret_key_re.search(text):
        return text
    pattern = re.compile(
        r"""(?P<key>["']?[\w-]*(?:""" + _secret_key_re.pattern + r""")[\w-]*["']?\s*[:=]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;&}\]]+)""",
        re.IGNORECASE,
    )
    return pattern.sub(lambda m: m.group("key") + _MASK, text)


def _redact_processor(_logger: Any, _name: str, event_dict: dict) -> dict:
    for key, value in list(event_dict.items()):
        if key in ("event", "timestamp", "level", "logger"):
            continue
        if _secret_key_re.search(key):
            event_dict[key] = _MASK
        elif isinstance(value, (dict, list, tuple)):
            event_dict[key] = redact(value, 1)
        elif isinstance(value, str) and key in ("error", "exception", "traceback", "message"):
            event_dict[key] = redact_text(value)
    return event_dict


def _add_process(_logger: Any, _name: str, event_dict: dict) -> dict:
    event_dict.setdefault("process", _PROCESS)
    event_dict.setdefault("pid", os.getpid())
    event_dict.setdefault("host", _HOST)
    return event_dict


def _drop_color_message(_logger: Any, _name: str, event_dict: dict) -> dict:
    event_dict.pop("color_message", None)
    return event_dict


_PROCESS = process_name()
_HOST = socket.gethostname()


class AppendFileHandler(logging.Handler):
    """Appends each line with one write(2) on an O_APPEND descriptor, so several processes can
    share one file without tearing lines. The descriptor stays open: rotate with logrotate's
    `copytruncate` (see infra/README.md)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            os.write(self._fd if self._fd is not None else self._open(), line)
        except Exception:  # pragma: no cover - logging must never break the caller
            self.handleError(record)

    def close(self) -> None:
        # logging.config.dictConfig() closes every handler it finds (Django runs it again in
        # some commands): forget the descriptor so that a later line reopens the file instead
        # of writing to a number the OS may have handed to a socket meanwhile.
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        super().close()


class _JSONOnce(structlog.stdlib.ProcessorFormatter):
    """Renders a record to JSON once, however many handlers (file, JSON console) print it."""

    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_pipeline_json")
        if cached is None:
            cached = record.__dict__["_pipeline_json"] = super().format(record)
        return cached


def configure(process: str | None = None, log_dir: str | None = None, level: str = "INFO") -> None:
    """Sets up structlog and the standard library's logging for this process; safe to call again."""
    global _PROCESS
    _PROCESS = process or process_name()
    log_dir = log_dir or os.environ.get("PIPELINE_LOG_DIR") or "var/log"

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process,
        _drop_color_message,
        _observe_metrics,  # Prometheus counters from the transition lines (pipeline/metrics.py)
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    foreign = [structlog.stdlib.ExtraAdder(), *shared]
    json_formatter = _JSONOnce(
        foreign_pre_chain=foreign,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact_processor,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    console_format = os.environ.get("PIPELINE_LOG_FORMAT", "auto")
    if console_format == "auto":
        console_format = "console" if sys.stderr.isatty() else "json"
    console_formatter = (
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redact_processor,
                structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), sort_keys=False),
            ],
        )
        if console_format == "console"
        else json_formatter
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(console_formatter)
    root.addHandler(console)
    file_handler = AppendFileHandler(Path(log_dir) / f"{_PROCESS}.jsonl")
    file_handler.setFormatter(json_formatter)
    root.addHandler(file_handler)
    root.setLevel(level)
    # pika logs every step of a failed connection at ERROR, with tracebacks; the broker's
    # unavailability is reported once, by us and by Dramatiq, so its own lines only add noise.
    for name, lib_level in (("pika", "CRITICAL"), ("apscheduler.executors", "WARNING"), ("django.db", "INFO")):
        logging.getLogger(name).setLevel(lib_level)


def configure_from_django(logging_settings: dict | None) -> None:
    """LOGGING_CONFIG entry point: Django hands us settings.LOGGING during django.setup()."""
    from django.conf import settings

    options = logging_settings or {}
    add_secret_keys(tuple(getattr(settings, "PIPELINE_REDACT_KEYS", ())))
    configure(log_dir=options.get("log_dir"), level=options.get("level", "INFO"))


def info_on_commit(logger: Any, event: str, **fields: Any) -> None:
    """Logs a transition once the transaction recording it commits (at once outside one), so
    the logs never tell of a change that was rolled back."""
    from django.db import connection, transaction

    if connection.in_atomic_block:
        transaction.on_commit(lambda: logger.info(event, **fields))
    else:
        logger.info(event, **fields)


def get_logger(name: str = "pipeline") -> Any:
    return structlog.get_logger(name)
