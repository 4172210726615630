"""Django middleware that binds a trace id for each request (from a valid W3C `traceparent`, or new)
and answers with the trace context to propagate: our `traceparent` (the incoming flags kept) and the
incoming `tracestate`, unchanged."""
from __future__ import annotations

from typing import Callable

import structlog
from django.http import HttpRequest, HttpResponse

from .tracing import DEFAULT_FLAGS, bind_incoming, new_trace_id, parse_trace_context, reset_incoming, traceparent


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = parse_trace_context(request.headers.get("traceparent"), request.headers.get("tracestate"))
        trace_id = incoming.trace_id if incoming else new_trace_id()
        request.trace_id = trace_id  # type: ignore[attr-defined]
        request.trace_context = incoming  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        token = bind_incoming(incoming)
        try:
            response = self.get_response(request)
        finally:
            reset_incoming(token)
            structlog.contextvars.clear_contextvars()
        response["traceparent"] = traceparent(trace_id, flags=incoming.flags if incoming else DEFAULT_FLAGS)
        if incoming and incoming.tracestate:
            response["tracestate"] = incoming.tracestate
        response["X-Trace-Id"] = trace_id
        return response
