"""Every error under /api/ is JSON, whoever produced it.

The API's views answer their own errors as JSON, but some answers come from Django itself: a
404 for a path no route matches (`/api/webhooks/abc`), a 405 from `require_http_methods`, a
403 from the CSRF check, a 400 for a request Django refuses before any view. Those are HTML
pages; this middleware gives them the API's error body, `{"error": "..."}`, keeping the status
and the headers that matter (`Allow` on a 405)."""
from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

_PREFIX = "/api/"
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After", "X-Trace-Id")


def _message(request: HttpRequest, response: HttpResponse) -> str:
    status = response.status_code
    if status == 404:
        return f"no such endpoint: {request.path[:200]}"
    if status == 405:
        return f"method {request.method} is not allowed here (allowed: {response.get('Allow', 'none')})"
    if status == 403:
        return "forbidden: this endpoint takes `Authorization: Bearer <token>`, not a browser session"
    if status >= 500:
        return f"the server failed to answer ({status} {response.reason_phrase}); the error is in its log"
    return f"the request was refused ({status} {response.reason_phrase})"


class JsonErrorsMiddleware:
    """Turns a non-JSON 4xx/5xx answer to a request under /api/ into the API's JSON error."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (response.status_code < 400 or not request.path.startswith(_PREFIX)
                or response.get("Content-Type", "").startswith("application/json")):
            return response
        replacement = JsonResponse({"error": _message(request, response)}, status=response.status_code)
        for header in _KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement
