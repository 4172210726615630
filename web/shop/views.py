"""Placing an order emits `order.placed` in the same transaction as the order row.

The order's pages need no login, so they are addressed by the order's random `public_token`
(`/shop/orders/<token>`), never by its sequential id, and show the email masked."""
from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from pydantic import ValidationError

from pipeline import FINAL_RUN_STATUSES, EventError, Run, emit
from web.api import live
from web.errors import error_response
from web.jsonbody import BadRequest, check_document, json_object

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


def _create_order(body: dict) -> tuple[Order, str]:
    with transaction.atomic():
        order = Order.objects.create(
            customer_email=body["customer_email"], items=body["items"], total_cents=body["total_cents"]
        )
        event_id = emit("order.placed", {**body, "order_id": order.pk}, source=f"shop:order:{order.pk}")
        Order.objects.filter(pk=order.pk).update(event_id=event_id)
    return order, event_id


@csrf_exempt  # a JSON endpoint for the demo's curl line; it takes no cookie-based authority
@require_http_methods(["POST"])
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        body = _validate_order(json_object(request))
        order, event_id = _create_order(body)
    except BadRequest as exc:
        return exc.response()
    except EventError as exc:
        return error_response(exc)
    return JsonResponse({"order_id": order.pk, "order_url": reverse("shop-order", args=[order.public_token]),
                         "event_id": event_id, "trace_id": request.trace_id}, status=201)


@require_http_methods(["GET"])
def order_page(request: HttpRequest, token: str):
    order = get_object_or_404(Order, public_token=token)
    runs = Run.objects.filter(event_id=order.event_id).prefetch_related("stages") if order.event_id else []
    return render(request, "shop/order.html", {"order": order, "runs": runs})


def _fulfilment_run_id(order: Order) -> str | None:
    if not order.event_id:
        return None
    run_id = (Run.objects.filter(event_id=order.event_id, pipeline="fulfil_order", replay_of__isnull=True)
              .values_list("id", flat=True).first())
    return str(run_id) if run_id else None


@require_http_methods(["GET"])
def order_json(request: HttpRequest, token: str) -> JsonResponse:
    """The order page's polling fallback (browsers without EventSource, or refused a stream): the
    order and its runs."""
    order = get_object_or_404(Order, public_token=token)
    runs = Run.objects.filter(event_id=order.event_id).prefetch_related("stages") if order.event_id else []
    return JsonResponse({
        "order_id": order.pk, "status": order.status, "failure_reason": order.failure_reason or None,
        "runs": [{"run_id": str(run.id), "pipeline": run.pipeline, "status": run.status,
                  "stages": [{"stage": s.stage, "status": s.status, "attempts": s.attempts,
                              "duration_ms": s.duration_ms, "error": s.error} for s in run.stages.all()]}
                 for run in runs],
    })


@require_http_methods(["GET"])
def order_events(request: HttpRequest, token: str):
    """`GET /shop/orders/<token>/events`: the order's fulfilment as server-sent events (public, like
    the page), ending with the order's own ending: `order.fulfilled` or `order.failed` (with the
    reason), which for a failed run comes from the shop's `order_failed` pipeline just after it."""
    order = get_object_or_404(Order, public_token=token)
    run_id = _fulfilment_run_id(order)
    live._release_connection()
    if run_id is None:
        return JsonResponse({"error": "this order has no fulfilment run"}, status=404)
    order_id = order.pk

    def order_status() -> dict:
        return {"order_status": Order.objects.filter(pk=order_id).values_list("status", flat=True).first()}

    return live.sse_response(request, run_id, extra=order_status, derive=lambda: _order_transitions(order_id, run_id))


def _order_transitions(order_id: int, run_id: str) -> tuple[list[dict], str | None]:
    """The run's transitions, then the order's ending once it has one. After the run ends the
    stream waits for it (state "ending"), at most `live.SETTLE_SECONDS`."""
    transitions, state = live.derive_transitions(run_id)
    if state not in FINAL_RUN_STATUSES:
        return transitions, state
    order = Order.objects.filter(pk=order_id).values("status", "failure_reason").first()
    if order and order["status"] in Order.FINAL:
        status = order["status"]
        transitions.append({"key": f"order:{status}", "type": f"order.{status}", "at": transitions[-1]["at"],
                            "order_status": status, "reason": order["failure_reason"] or None})
        return transitions, state
    ended = next((t["at"] for t in reversed(transitions) if t["type"] == f"run.{state}"), None)
    if ended and (timezone.now() - live._parse(ended)).total_seconds() < live.SETTLE_SECONDS:
        return transitions, "ending"
    return transitions, state


@require_http_methods(["GET", "POST"])
def shop_home(request: HttpRequest):
    """A small form to place an order from a browser (a normal POST with its CSRF token); on
    success, the order's page, which follows its fulfilment live."""
    values = {"customer_email": "", "sku": "BOOK-1", "quantity": "1", "total_cents": "1000"}
    error = None
    if request.method == "POST":
        values = {key: request.POST.get(key, "").strip() for key in values}
        try:
            try:
                quantity, total = int(values["quantity"]), int(values["total_cents"])
            except ValueError:
                raise BadRequest("quantity and total must be whole numbers", field="quantity") from None
            body = {"customer_email": values["customer_email"],
                    "items": [{"sku": values["sku"], "quantity": quantity}], "total_cents": total}
            check_document(body)  # the limits every JSON body has (no NUL in a field)
            body = _validate_order(body)
            order, _ = _create_order(body)
            return redirect("shop-order", token=order.public_token)
        except BadRequest as exc:
            error = str(exc)
        except EventError as exc:
            error = exc.as_dict().get("error", str(exc))
    return render(request, "shop/home.html", {"values": values, "error": error}, status=400 if error else 200)
