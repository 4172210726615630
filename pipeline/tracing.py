"""Trace ids in W3C trace-context format, carried from the request to the last stage."""
from __future__ import annotations

import re
import secrets

import structlog

_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def parse_traceparent(header: str | None) -> str | None:
    """The trace id of a valid `traceparent` header, else None (an invalid one starts a new trace)."""
    if not header:
        return None
    match = _TRACEPARENT_RE.match(header.strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def traceparent(trace_id: str, span_id: str | None = None) -> str:
    return f"00-{trace_id}-{span_id or new_span_id()}-01"


def current_trace_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("trace_id")
