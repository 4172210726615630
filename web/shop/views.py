"""Placing an order emits `order.placed` in the same transaction as the order row."""
from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from pydantic import ValidationError

from pipeline import EventError, emit
from pipeline.models import Run
from web.jsonbody import BadRequest, json_object

from .events import OrderPlaced
from .models import Order

_ORDER_FIELDS = {"customer_email", "items", "total_cents"}


def _validate_order(body: dict) -> dict:
    unknown = sorted(set(body) - _ORDER_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    missing = sorted(_ORDER_FIELDS - set(body))
    if missing:
        raise BadRequest(f"missing field: {missing[0]}", field=missing[0])
    try:
        OrderPlaced.model_validate({**body, "order_id": 0})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"invalid field {field}: {first['msg']}", field=field) from None
    return body


@csrf_exempt  # a JSON endpoint for the demo's curl line; it takes no cookie-based authority
@require_http_methods(["POST"])
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        body = _validate_order(json_object(request))
        with transaction.atomic():
            order = Order.objects.create(
                customer_email=body["customer_email"], items=body["items"], total_cents=body["total_cents"]
            )
            event_id = emit("order.placed", {**body, "order_id": order.pk}, source=f"shop:order:{order.pk}")
            Order.objects.filter(pk=order.pk).update(event_id=event_id)
    except BadRequest as exc:
        return exc.response()
    except EventError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status_code)
    return JsonResponse({"order_id": order.pk, "event_id": event_id, "trace_id": request.trace_id}, status=201)


@require_http_methods(["GET"])
def order_page(request: HttpRequest, order_id: int):
    order = get_object_or_404(Order, pk=order_id)
    runs = Run.objects.filter(event_id=order.event_id).prefetch_related("stages") if order.event_id else []
    return render(request, "shop/order.html", {"order": order, "runs": runs})
