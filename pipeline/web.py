"""Django middleware that binds a trace id for each request (from `traceparent`, or new)."""
from __future__ import annotations

from typing import Callable

import structlog
from django.http import HttpRequest, HttpResponse

from .tracing import new_trace_id, parse_traceparent, traceparent


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        trace_id = parse_traceparent(request.headers.get("traceparent")) or new_trace_id()
        request.trace_id = trace_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        try:
            response = self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()
        response["traceparent"] = traceparent(trace_id)
        response["X-Trace-Id"] = trace_id
        return response
