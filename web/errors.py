"""The engine's errors as HTTP responses: the one table of which error is which status.

The engine (`pipeline.errors`) knows no transport; every view that turns a `PipelineError` into
a response asks `status_for`, so an error means the same status on every endpoint."""
from __future__ import annotations

from django.http import JsonResponse

from pipeline import (
    BrokerUnavailable,
    EventError,
    OperationRefused,
    PayloadTooLarge,
    PipelineError,
    RunNotFound,
)

# Most specific first: the first class the error is an instance of gives its status.
HTTP_STATUS: tuple[tuple[type[PipelineError], int], ...] = (
    (PayloadTooLarge, 413),
    (EventError, 400),
    (RunNotFound, 404),
    (OperationRefused, 409),
    (BrokerUnavailable, 503),
)


def status_for(error: PipelineError) -> int:
    """The HTTP status of an engine error; one the table does not name is the server's fault (500)."""
    for kind, status in HTTP_STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_response(error: PipelineError) -> JsonResponse:
    """The error as the JSON body the API documents: `error`, plus the fields an `EventError` names."""
    body = error.as_dict() if isinstance(error, EventError) else {"error": str(error)}
    return JsonResponse(body, status=status_for(error))
