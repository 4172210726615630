"""Bearer-token authentication for the machine API."""
from __future__ import annotations

from functools import wraps
from typing import Callable

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from pipeline import trust_received_trace

from .models import ApiToken


def token_required(view: Callable) -> Callable:
    """Views for machines: a valid `Authorization: Bearer <token>` or 401 (unknown, inactive or
    expired token); a read-only token gets 403 for anything but GET/HEAD/OPTIONS, so a view's
    HTTP method is its permission. Token requests carry no cookies a browser could replay, so CSRF
    does not apply to them (it stays on everywhere else)."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return JsonResponse({"error": "authentication required: send Authorization: Bearer <token>"}, status=401)
        token = ApiToken.find(value.strip())
        if token is None:
            return JsonResponse({"error": "invalid or inactive API token"}, status=401)
        refusal = token.refusal(request.method or "GET")
        if refusal is not None:
            status, reason = refusal
            return JsonResponse({"error": reason, **({"field": "scope"} if status == 403 else {})}, status=status)
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        request.api_token = token  # type: ignore[attr-defined]
        trust_received_trace(request)  # an authenticated call may continue its caller's trace
        return view(request, *args, **kwargs)

    return wrapper
