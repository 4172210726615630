"""Trace context in W3C Trace Context (level 1) form, carried from the request to the last stage.

`parse_trace_context` reads `traceparent` exactly as the specification's processing model says, so a
header another tracer would refuse starts a new trace here too, and one it would accept is kept:

- `version-traceid-parentid-flags`, every field lowercase hex (an uppercase digit anywhere makes the
  header invalid); version `ff` is invalid; trace id (32 digits) and parent id (16) not all zeros;
- version `00` is exactly those four fields (55 characters);
- a later version (`01`…`fe`) is read by its first four fields: anything after them must start
  with `-` (fields a later version may add), and is ignored.

The flags are kept as received (sampled bit and the others), and `tracestate` is carried unchanged
beside them (only with a valid `traceparent`, as the specification asks)."""
from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

import structlog

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_ZERO_TRACE_ID, _ZERO_PARENT_ID = "0" * 32, "0" * 16
DEFAULT_FLAGS = "01"  # sampled: what we send when a trace starts here
# Longer tracestate values are dropped, not cut (a cut list member would be corrupt); the
# specification asks to propagate at least 512 characters.
MAX_TRACESTATE = 8192
_OWS = " \t"


@dataclass(frozen=True)
class TraceContext:
    """A valid incoming trace context: its trace id, the caller's span (parent id), the flags as
    received (two lowercase hex digits) and the `tracestate` header ("" when none came)."""

    trace_id: str
    parent_id: str
    flags: str = DEFAULT_FLAGS
    tracestate: str = ""
    version: str = "00"

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 0x01)


_incoming: ContextVar[TraceContext | None] = ContextVar("pipeline_trace_context", default=None)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def parse_trace_context(header: str | None, tracestate: str | None = None) -> TraceContext | None:
    """The trace context of a valid `traceparent` header (with `tracestate`, unchanged), else None:
    an invalid header starts a new trace."""
    if not header:
        return None
    value = header.strip(_OWS)
    match = _TRACEPARENT_RE.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_PARENT_ID:
        return None
    state = (tracestate or "").strip(_OWS)
    if len(state) > MAX_TRACESTATE:
        state = ""
    return TraceContext(trace_id, parent_id, flags, state, version)


def parse_traceparent(header: str | None) -> str | None:
    """The trace id of a valid `traceparent` header, else None (an invalid one starts a new trace)."""
    context = parse_trace_context(header)
    return context.trace_id if context else None


def traceparent(trace_id: str, span_id: str | None = None, flags: str = DEFAULT_FLAGS) -> str:
    """A version-00 `traceparent` (the version we speak, whatever version came in)."""
    return f"00-{trace_id}-{span_id or new_span_id()}-{flags}"


def bind_incoming(context: TraceContext | None) -> object:
    """Makes `context` the current request's incoming trace context (flags, tracestate) for events
    emitted under it; returns the token for `reset_incoming`."""
    return _incoming.set(context)


def reset_incoming(token: object) -> None:
    _incoming.reset(token)  # type: ignore[arg-type]


def incoming_for(trace_id: str) -> TraceContext | None:
    """The incoming trace context, when it is the one of `trace_id` (an event given a trace id of
    its own does not take a request's flags)."""
    context = _incoming.get()
    return context if context is not None and context.trace_id == trace_id else None


def current_trace_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("trace_id")
