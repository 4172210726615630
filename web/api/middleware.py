"""Every error under the API's prefix (`/api/` here; wherever a project mounts `web.routes`) is
JSON, whoever produced it.

The API's views answer their own errors as JSON, but some answers come from Django itself: a
404 for a path no route matches (`/api/webhooks/abc`), a 405 from `require_http_methods`, a
403 from the CSRF check, a 400 for a request Django refuses before any view. Those are HTML
pages; this middleware gives them the API's error body, `{"error": "..."}`, keeping the status
and the headers that matter (`Allow` on a 405)."""
from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse

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


def api_root() -> str | None:
    """Where the API is mounted in this project (`/api/`, or `/<prefix>/api/` under `web.routes`),
    read from the URLconf so that the prefix is the project's choice; None when it is not mounted."""
    try:
        return reverse("api-openapi").removesuffix("openapi.json")
    except NoReverseMatch:
        return None


class JsonErrorsMiddleware:
    """Turns a non-JSON 4xx/5xx answer to a request under the API's prefix into the API's JSON error."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
            return response
        root = api_root()
        if root is None or not request.path.startswith(root):
            return response
        replacement = JsonResponse({"error": _message(request, response)}, status=response.status_code)
        for header in _KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement
