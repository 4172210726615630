"""503 for any request that needed the run store while its database could not be reached.

Why here and not in each view: an outage fails whatever touches the database first (the API
token's lookup, the shop's order, `emit`), and the answer is the same for all of them: nothing was
recorded, try again. The body is JSON like every other API error; `Retry-After` tells clients when."""
from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from pipeline import store_outage as outage

RETRY_AFTER_SECONDS = 5


def store_unavailable_response() -> JsonResponse:
    response = JsonResponse(
        {"error": "the run store (database) is unreachable: nothing was recorded; try again shortly",
         "store": "unavailable", "retry_after_seconds": RETRY_AFTER_SECONDS},
        status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class StoreUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if outage.noticed(exception):  # logs `store.unavailable` once per outage in this process
            return store_unavailable_response()
        return None
