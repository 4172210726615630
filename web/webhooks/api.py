"""`GET|POST /api/webhooks`, `GET|DELETE /api/webhooks/<id>`: webhook subscriptions over the JSON API."""
from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from pipeline import registry
from web.api.auth import token_required
from web.jsonbody import BadRequest, json_object

from . import fanout
from .models import EVENT_TYPES, WebhookSubscription, check_secret, check_url
from .targets import without_userinfo

_FIELDS = {"name", "url", "secret", "event_types", "pipelines", "active", "max_consecutive_failures", "max_attempts"}


def subscription_json(sub: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": sub.pk, "name": sub.name, "url": without_userinfo(sub.url), "event_types": sub.event_types, "pipelines": sub.pipelines,
        "active": sub.active, "consecutive_failures": sub.consecutive_failures,
        "max_consecutive_failures": sub.max_consecutive_failures, "max_attempts": sub.max_attempts,
        "disabled_at": sub.disabled_at.isoformat() if sub.disabled_at else None,
        "disabled_reason": sub.disabled_reason or None, "created_at": sub.created_at.isoformat(),
    }  # never the secret, nor a password in the URL (subscriptions made before userinfo was refused)


def _validated(body: dict) -> dict[str, Any]:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 200:
        raise BadRequest("name is required: a string of 1 to 200 characters", field="name")
    problem = check_url(body.get("url"))
    if problem:
        raise BadRequest(problem, field="url")
    problem = check_secret(body.get("secret"))
    if problem:
        raise BadRequest(problem, field="secret")
    event_types = body.get("event_types", list(EVENT_TYPES))
    if (not isinstance(event_types, list) or not event_types
            or any(t not in EVENT_TYPES for t in event_types)):
        raise BadRequest(f"event_types must be a non-empty list of {', '.join(EVENT_TYPES)}", field="event_types")
    pipelines = body.get("pipelines", [])
    if not isinstance(pipelines, list) or any(not isinstance(p, str) for p in pipelines):
        raise BadRequest("pipelines must be a list of pipeline names (empty: every pipeline)", field="pipelines")
    unknown_pipelines = [p for p in pipelines if p not in registry.pipelines]
    if unknown_pipelines:
        raise BadRequest(f"unknown pipeline {unknown_pipelines[0]!r}", field="pipelines")
    data = {"name": name.strip(), "url": body["url"], "secret": body["secret"],
            "event_types": list(dict.fromkeys(event_types)), "pipelines": pipelines}
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise BadRequest("active must be true or false", field="active")
        data["active"] = body["active"]
    for field, low, high in (("max_consecutive_failures", 1, 1000), ("max_attempts", 1, 6)):
        if field in body:
            value = body[field]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise BadRequest(f"{field} must be a whole number from {low} to {high}", field=field)
            data[field] = value
    return data


@token_required
@require_http_methods(["GET", "POST"])
def webhooks_collection(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"webhooks": [subscription_json(s) for s in WebhookSubscription.objects.all()]})
    try:
        data = _validated(json_object(request))
        try:
            with transaction.atomic():
                sub = WebhookSubscription.objects.create(**data)
        except IntegrityError:
            raise BadRequest(f"a webhook named {data['name']!r} already exists", status=409, field="name") from None
    except BadRequest as exc:
        return exc.response()
    fanout.forget_cache()
    return JsonResponse(subscription_json(sub), status=201)


@token_required
@require_http_methods(["GET", "DELETE"])
def webhook_item(request: HttpRequest, webhook_id: int) -> HttpResponse:
    sub = WebhookSubscription.objects.filter(pk=webhook_id).first()
    if sub is None:
        return JsonResponse({"error": f"no webhook with id {webhook_id}"}, status=404)
    if request.method == "GET":
        return JsonResponse(subscription_json(sub))
    sub.delete()
    fanout.forget_cache()
    return HttpResponse(status=204)
