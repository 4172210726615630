"""Django middleware that binds a trace id for each request.

A `traceparent` header is only *trusted* (its trace id becomes the request's, and so that of every
event and run the request starts) where `PIPELINE_TRUSTED_TRACEPARENT` says so:

- `authenticated` (the default): requests of a logged-in user, and API calls once their token is
  accepted (`trust_received_trace`, called by the API's token check); an anonymous request to a
  public endpoint (the shop) starts a new trace, so nobody can attach their runs to another
  customer's trace id;
- `all`: every request (a private deployment behind a proxy that sets the header itself);
- `none`: no request.

An untrusted valid `traceparent` is not thrown away: its trace id is kept as a *link*
(`linked_trace_id` on every log line of the request, and on each event the request emits), the way
OpenTelemetry links a span to a trace it does not belong to.

The answer carries the trace context to propagate: our `traceparent` (with the incoming flags when
the incoming trace was taken) and the incoming `tracestate`, unchanged."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Callable

import structlog
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from . import conf
from ._tracing import DEFAULT_FLAGS, bind_incoming, new_trace_id, parse_trace_context, reset_incoming, traceparent

MODES = ("authenticated", "all", "none")

# The received trace id this request does not trust, for `emit` to store as the event's link.
_linked_trace_id: ContextVar[str | None] = ContextVar("pipeline_linked_trace_id", default=None)


def trust_mode() -> str:
    """PIPELINE_TRUSTED_TRACEPARENT (setting, else environment variable): authenticated, all or none."""
    raw = conf.get("PIPELINE_TRUSTED_TRACEPARENT")
    mode = str(raw).strip().lower()
    if mode not in MODES:
        raise ImproperlyConfigured(f"PIPELINE_TRUSTED_TRACEPARENT={raw!r}: use one of {', '.join(MODES)}")
    return mode


def linked_trace_id() -> str | None:
    """The untrusted trace id received with the current request, if any (see the module's doc)."""
    return _linked_trace_id.get()


def _bind(request: HttpRequest, trace_id: str, linked: str | None) -> None:
    request.trace_id = trace_id  # type: ignore[attr-defined]
    request.linked_trace_id = linked  # type: ignore[attr-defined]
    _linked_trace_id.set(linked)
    structlog.contextvars.bind_contextvars(trace_id=trace_id)
    if linked:
        structlog.contextvars.bind_contextvars(linked_trace_id=linked)
    else:
        structlog.contextvars.unbind_contextvars("linked_trace_id")


def trust_received_trace(request: HttpRequest) -> None:
    """Called once a request is known to be authenticated (the API's token check): under the
    `authenticated` mode, the received `traceparent`'s trace id becomes the request's."""
    received = getattr(request, "received_trace_id", None)
    if received and received != getattr(request, "trace_id", None) and trust_mode() == "authenticated":
        _bind(request, received, None)


def _trusted_now(request: HttpRequest, mode: str) -> bool:
    if mode == "all":
        return True
    if mode == "none":
        return False
    user = getattr(request, "user", None)  # AuthenticationMiddleware runs before this one
    return bool(user is not None and user.is_authenticated)


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        trust_mode()  # a bad value stops the process at start, naming the variable

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = parse_trace_context(request.headers.get("traceparent"), request.headers.get("tracestate"))
        received = incoming.trace_id if incoming else None
        request.received_trace_id = received  # type: ignore[attr-defined]
        request.trace_context = incoming  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        if received and _trusted_now(request, trust_mode()):
            _bind(request, received, None)
        else:
            _bind(request, new_trace_id(), received)
        # Flags and tracestate apply to events emitted under the incoming trace id only (incoming_for).
        token = bind_incoming(incoming)
        try:
            response = self.get_response(request)
        finally:
            reset_incoming(token)
            structlog.contextvars.clear_contextvars()
            _linked_trace_id.set(None)
        trace_id = request.trace_id  # type: ignore[attr-defined]
        continued = incoming is not None and incoming.trace_id == trace_id
        response["traceparent"] = traceparent(trace_id, flags=incoming.flags if continued else DEFAULT_FLAGS)
        if continued and incoming.tracestate:
            response["tracestate"] = incoming.tracestate
        response["X-Trace-Id"] = trace_id
        return response
