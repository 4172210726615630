"""Reading a JSON request body, with a precise 4xx for every way it can be wrong."""
from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse

from pipeline import conf


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra

    def response(self) -> JsonResponse:
        return JsonResponse({"error": str(self), **self.extra}, status=self.status)


def json_object(request: HttpRequest) -> dict[str, Any]:
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise BadRequest(f"expected Content-Type: application/json, got {content_type or 'none'!r}", status=415)
    limit = conf.get("PIPELINE_MAX_PAYLOAD_BYTES") + 4096
    if len(request.body) > limit:
        raise BadRequest(f"request body is {len(request.body)} bytes, over the limit of {limit} bytes", status=413)
    try:
        data = json.loads(request.body or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data
