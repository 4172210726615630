"""The demo shop's pipelines: what happens after an order is placed, what happens when that
fails, and a recurring report."""
import random

from django.conf import settings

from pipeline import Concurrency, Pipeline, StageContext, StageRun

from .events import OrderPlaced  # noqa: F401  (registers the order.placed schema)
from .models import Order

# One fulfilment per customer at a time (two orders of one customer racing on the same stock and
# card would be trouble); other customers' orders go on meanwhile. See the README's "Flow control".
_PER_CUSTOMER = getattr(settings, "SHOP_FULFILMENTS_PER_CUSTOMER", 1)
fulfil_order = Pipeline("fulfil_order", on="order.placed", concurrency=Concurrency(
    limit=_PER_CUSTOMER, key="customer_email") if _PER_CUSTOMER else None)


@fulfil_order.stage(retries=3, backoff=(0.2, 2), timeout=30)
def reserve_stock(ctx: StageContext) -> dict:
    order_id = ctx.event.payload["order_id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.RESERVED, failure_reason="")
    skus = [item["sku"] for item in ctx.event.payload["items"]]
    ctx.log.info("stock.reserved", order_id=order_id, skus=skus)
    return {"reservation": f"res-{order_id}", "skus": skus}


@fulfil_order.stage(retries=5, backoff=(0.2, 2), timeout=30)
def charge_payment(ctx: StageContext) -> dict:
    """Fails SHOP_FAILURE_RATE of its attempts, like a flaky payment provider, to show retries; every
    attempt for a total of SHOP_FAILING_TOTAL_CENTS, to show an order that fails."""
    failing_total = settings.SHOP_FAILING_TOTAL_CENTS
    if random.random() < settings.SHOP_FAILURE_RATE or (failing_total and ctx.event.payload["total_cents"] == failing_total):
        raise ConnectionError("payment provider timed out")
    order_id = ctx.event.payload["order_id"]
    reference = f"pay-{ctx.idempotency_key}"
    Order.objects.filter(pk=order_id).update(status=Order.Status.CHARGED, payment_reference=reference,
                                                    failure_reason="")
    return {"payment_reference": reference, "amount_cents": ctx.event.payload["total_cents"]}


@fulfil_order.stage(retries=3, backoff=(0.2, 2), timeout=30)
def ship_order(ctx: StageContext) -> dict:
    order_id = ctx.event.payload["order_id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.FULFILLED, failure_reason="")
    return {"tracking_number": f"TRK{order_id:08d}", "payment": ctx.results["charge_payment"]["payment_reference"]}


# When `fulfil_order` ends badly, the order says so: the engine emits the run's outcome
# (`run.failed` / `run.cancelled`, see pipeline/_outcomes.py), and these pipelines of the shop's own
# set the order `failed`, with a reason a customer may read. The run keeps the technical error.
order_failed = Pipeline("order_failed", on="run.failed", of=["fulfil_order"])
order_cancelled = Pipeline("order_cancelled", on="run.cancelled", of=["fulfil_order"])

NOT_CHARGED = "You have not been charged."
REASONS = {
    "reserve_stock": "We could not reserve your items, so your order was not placed. " + NOT_CHARGED,
    "charge_payment": "We could not take your payment (the payment provider did not answer), so your order was "
                      "not placed. " + NOT_CHARGED + " Please try again later.",
    "ship_order": "Your payment was taken but we could not ship your order; it will be refunded within 5 "
                  "working days.",
}
CANCELLED = "Your order was cancelled before it was completed."


def customer_reason(status: str, failed_stage: str | None, charged: bool) -> str:
    """What went wrong, for the customer: which step failed and what happens to their money."""
    if status == "cancelled":
        return CANCELLED + (" Your payment will be refunded within 5 working days." if charged else " " + NOT_CHARGED)
    return REASONS.get(failed_stage or "", "Your order could not be completed. "
                       + ("Your payment will be refunded within 5 working days." if charged else NOT_CHARGED))


def mark_order_failed(ctx: StageContext) -> dict:
    """Sets the order of a failed or cancelled `fulfil_order` run `failed`, with its reason. A run
    replayed to success later sets the order's status again (and clears the reason)."""
    outcome = ctx.event.payload
    failed_stage = (StageRun.objects.filter(run_id=outcome["run_id"], status="failed")
                    .order_by("-finished_at").values_list("stage", flat=True).first())
    order = Order.objects.filter(event_id=outcome["event_id"]).values("pk", "payment_reference").first()
    if order is None:
        ctx.log.warning("order.failed_unknown", outcome_run_id=outcome["run_id"])
        return {"order_id": None}
    reason = customer_reason(outcome["status"], failed_stage, bool(order["payment_reference"]))
    updated = (Order.objects.filter(pk=order["pk"]).exclude(status=Order.Status.FULFILLED)
               .update(status=Order.Status.FAILED, failure_reason=reason))
    ctx.log.info("order.failed", order_id=order["pk"], outcome_run_id=outcome["run_id"],
                 outcome=outcome["status"], failed_stage=failed_stage, updated=bool(updated))
    return {"order_id": order["pk"], "failed_stage": failed_stage, "reason": reason}


order_failed.stage(name="mark_order_failed", retries=5, backoff=(0.2, 5), timeout=30)(mark_order_failed)
order_cancelled.stage(name="mark_order_cancelled", retries=5, backoff=(0.2, 5), timeout=30)(mark_order_failed)


stock_report = Pipeline("stock_report")


@stock_report.stage(retries=2, timeout=60)
def count_orders(ctx: StageContext) -> dict:
    counts = {status: Order.objects.filter(status=status).count() for status in Order.Status.values}
    ctx.log.info("stock_report.counted", **counts)
    return counts
