"""The demo shop's pipelines: what happens after an order is placed, and a recurring report."""
import random

from django.conf import settings

from pipeline import Pipeline, StageContext

from .events import OrderPlaced  # noqa: F401  (registers the order.placed schema)
from .models import Order

fulfil_order = Pipeline("fulfil_order", on="order.placed")


@fulfil_order.stage(retries=3, backoff=(0.2, 2), timeout=30)
def reserve_stock(ctx: StageContext) -> dict:
    order_id = ctx.event.payload["order_id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.RESERVED)
    skus = [item["sku"] for item in ctx.event.payload["items"]]
    ctx.log.info("stock.reserved", order_id=order_id, skus=skus)
    return {"reservation": f"res-{order_id}", "skus": skus}


@fulfil_order.stage(retries=5, backoff=(0.2, 2), timeout=30)
def charge_payment(ctx: StageContext) -> dict:
    """Fails SHOP_FAILURE_RATE of its attempts, like a flaky payment provider, to show retries."""
    if random.random() < settings.SHOP_FAILURE_RATE:
        raise ConnectionError("payment provider timed out")
    order_id = ctx.event.payload["order_id"]
    reference = f"pay-{ctx.idempotency_key}"
    Order.objects.filter(pk=order_id).update(status=Order.Status.CHARGED, payment_reference=reference)
    return {"payment_reference": reference, "amount_cents": ctx.event.payload["total_cents"]}


@fulfil_order.stage(retries=3, backoff=(0.2, 2), timeout=30)
def ship_order(ctx: StageContext) -> dict:
    order_id = ctx.event.payload["order_id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.FULFILLED)
    return {"tracking_number": f"TRK{order_id:08d}", "payment": ctx.results["charge_payment"]["payment_reference"]}


stock_report = Pipeline("stock_report")


@stock_report.stage(retries=2, timeout=60)
def count_orders(ctx: StageContext) -> dict:
    counts = {status: Order.objects.filter(status=status).count() for status in Order.Status.values}
    ctx.log.info("stock_report.counted", **counts)
    return counts
