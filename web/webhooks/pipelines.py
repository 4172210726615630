"""The webhook delivery pipeline: POSTs one completion event to one subscription's URL, signed,
with retries and backoff; a delivery is a run like any other (dashboard, API, logs)."""
from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import requests
from django.db.models import F
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field

from pipeline import Pipeline, StageContext, event_type

from . import signing

RETRIES = 5  # six attempts at most; a subscription's max_attempts may ask for fewer
BACKOFF = (1, 60)  # seconds, exponential with jitter
TIMEOUT = (3, 10)  # connect, read (seconds)
MAX_REDIRECTS = 3  # followed only to the same scheme, host and port


@event_type("webhook.delivery")
class WebhookDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subscription_id: int
    event_type: str = Field(pattern=r"^run\.(succeeded|failed|cancelled)$")
    event_id: str
    body: str


class DeliveryFailed(Exception):
    pass


class GaveUp(Exception):
    """The subscription's last attempt failed (or it is gone): no further retry."""


deliver_webhook = Pipeline("deliver_webhook", on="webhook.delivery", emits_outcome=False)


def _same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


def post(url: str, secret: str, body: str, event_type: str, delivery_id: str) -> requests.Response:
    """One signed POST; redirects followed by hand, at most MAX_REDIRECTS, never to another origin."""
    data = body.encode()
    for _ in range(MAX_REDIRECTS + 1):
        headers = {"Content-Type": "application/json", "User-Agent": "django-pipelines-webhooks/1",
                   "X-Pipeline-Event": event_type, "X-Pipeline-Delivery": delivery_id,
                   **signing.headers(secret, data)}
        response = requests.post(url, data=data, headers=headers, timeout=TIMEOUT, allow_redirects=False)
        if response.is_redirect or response.status_code in (307, 308):
            target = urljoin(url, response.headers.get("Location", ""))
            if not _same_origin(url, target):
                raise DeliveryFailed(f"redirect to another host refused: {target}")
            url = target
            continue
        return response
    raise DeliveryFailed(f"more than {MAX_REDIRECTS} redirects")


@deliver_webhook.stage(retries=RETRIES, backoff=BACKOFF, timeout=60, throws=(GaveUp,))
def deliver(ctx: StageContext) -> dict:
    from .models import WebhookSubscription

    payload = ctx.event.payload
    subscription = WebhookSubscription.objects.filter(pk=payload["subscription_id"]).first()
    if subscription is None:
        raise GaveUp(f"subscription {payload['subscription_id']} no longer exists")
    if not subscription.active:
        return {"skipped": "subscription disabled", "subscription": subscription.name}
    try:
        response = post(subscription.url, subscription.secret, payload["body"], payload["event_type"], ctx.run_id)
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"{subscription.url} answered {response.status_code}")
    except (requests.RequestException, DeliveryFailed) as exc:
        error = exc if isinstance(exc, DeliveryFailed) else DeliveryFailed(f"{type(exc).__name__}: {exc}")
        if ctx.attempt >= min(RETRIES + 1, max(1, subscription.max_attempts)):
            _count_failure(ctx, subscription.pk, str(error))
            raise GaveUp(str(error)) from exc
        raise error from exc
    WebhookSubscription.objects.filter(pk=subscription.pk).exclude(consecutive_failures=0).update(consecutive_failures=0)
    return {"status_code": response.status_code, "subscription": subscription.name, "attempt": ctx.attempt}


def _count_failure(ctx: StageContext, subscription_id: int, error: str) -> None:
    from .models import WebhookSubscription

    WebhookSubscription.objects.filter(pk=subscription_id).update(consecutive_failures=F("consecutive_failures") + 1)
    row = WebhookSubscription.objects.filter(pk=subscription_id).values(
        "name", "consecutive_failures", "max_consecutive_failures", "active").first()
    if row and row["active"] and row["consecutive_failures"] >= row["max_consecutive_failures"]:
        reason = f"{row['consecutive_failures']} deliveries in a row failed; last: {error}"
        WebhookSubscription.objects.filter(pk=subscription_id, active=True).update(
            active=False, disabled_at=timezone.now(), disabled_reason=reason)
        ctx.log.warning("webhook.disabled", subscription_id=subscription_id, subscription=row["name"],
                        consecutive_failures=row["consecutive_failures"], reason=reason)
