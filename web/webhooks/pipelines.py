"""The webhook delivery pipeline: POSTs one completion event to one subscription's URL, signed,
with retries and backoff; a delivery is a run like any other (dashboard, API, logs).

Every connection goes through the target policy (`targets`, `transport.PinnedAdapter`), redirects
are followed by hand to the same origin only, as parsed by the client's own parser, and at most
MAX_RESPONSE_BYTES of an answer are read. What a failed attempt records in its run (and so shows
in the API and the dashboard) is one of two generic sentences; what actually happened (the status,
the connection error, the redirect, the size) is in the worker's `webhook.delivery_failed` line,
which names the target by its origin only (a webhook URL's path is often a secret)."""
from __future__ import annotations

import time
from urllib.parse import urljoin

import requests
from django.db.models import F
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field
from urllib3.exceptions import HTTPError, LocationParseError
from urllib3.util import parse_url

from pipeline import Pipeline, StageContext, event_type

from . import signing, targets, transport
from .models import WebhookSubscription

RETRIES = 5  # six attempts at most; a subscription's max_attempts may ask for fewer
BACKOFF = (1, 60)  # seconds, exponential with jitter
TIMEOUT = (3, 10)  # connect, read (seconds); the read timeout also bounds reading the whole answer
MAX_REDIRECTS = 3  # followed only to the same scheme, host and port
MAX_RESPONSE_BYTES = 64 * 1024  # of a receiver's answer body; more fails the attempt
FAILED = "delivery failed"
REFUSED = "delivery refused: the target is outside the webhook target policy"


@event_type("webhook.delivery", engine=True)
class WebhookDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subscription_id: int
    event_type: str = Field(pattern=r"^run\.(succeeded|failed|cancelled)$")
    event_id: str
    body: str


class DeliveryFailed(Exception):
    """Raised when an attempt did not deliver. Its text is what the run records: FAILED or
    REFUSED, nothing that tells whether a host answered, refused the connection or timed out
    (which would make subscriptions a blind port scanner); `detail` says it, for the log only."""

    def __init__(self, detail: str, public: str = FAILED) -> None:
        super().__init__(public)
        self.detail = detail


class GaveUp(Exception):
    """The subscription's last attempt failed (or it is gone): no further retry."""


deliver_webhook = Pipeline("deliver_webhook", on="webhook.delivery", emits_outcome=False)


def _origin(url: str) -> tuple[str | None, str | None, int | None]:
    """(scheme, host, port) as urllib3 (and so requests) reads them; default ports filled in."""
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _describe(exc: BaseException) -> str:
    """`<requests error>: <its innermost cause>`, e.g. `ConnectionError: ... Connection refused`:
    the cause names host and port, where the outer message would also quote the URL's path."""
    root = exc
    for _ in range(10):
        inner = getattr(root, "reason", None)
        if not isinstance(inner, BaseException) and root.args and isinstance(root.args[0], BaseException):
            inner = root.args[0]
        if not isinstance(inner, BaseException) or inner is root:
            break
        root = inner
    return type(exc).__name__ if root is exc else f"{type(exc).__name__}: {root}"


def _read_capped(response: requests.Response, deadline: float) -> int:
    """Reads (and drops) the answer's body, at most MAX_RESPONSE_BYTES; returns its size."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise DeliveryFailed(f"the answer declares {int(declared)} bytes, over the limit of {MAX_RESPONSE_BYTES} bytes")
    size = 0
    for chunk in response.raw.stream(16 * 1024, decode_content=False):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise DeliveryFailed(f"the answer's body is over the limit of {MAX_RESPONSE_BYTES} bytes")
        if time.monotonic() > deadline:
            raise DeliveryFailed(f"the answer's body took longer than {TIMEOUT[1]} s")
    return size


def post(url: str, secret: str, body: str, event_type: str, delivery_id: str) -> requests.Response:
    """One signed POST; redirects followed by hand, at most MAX_REDIRECTS, never to another origin.
    Raises DeliveryFailed (its `detail` says why) for anything but a 2xx answer."""
    problem = targets.url_problem(url, resolve_host=False)
    if problem:
        raise DeliveryFailed(problem, REFUSED)
    data = body.encode()
    with transport.session() as session:
        for _ in range(MAX_REDIRECTS + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "django-pipelines-webhooks/1",
                       "X-Pipeline-Event": event_type, "X-Pipeline-Delivery": delivery_id,
                       **signing.headers(secret, data)}
            try:
                response = session.post(url, data=data, headers=headers, timeout=TIMEOUT, allow_redirects=False,
                                        stream=True)
            except targets.TargetRefused as exc:
                raise DeliveryFailed(str(exc), REFUSED) from None
            except requests.RequestException as exc:
                raise DeliveryFailed(_describe(exc)) from None
            with response:
                if response.is_redirect or response.status_code in (307, 308):
                    # The target as requests would prepare it, compared as urllib3 parses it: the
                    # parser that decides where the next connection goes is the one that checks.
                    location = response.headers.get("Location", "")
                    try:
                        target = requests.Request("POST", urljoin(url, location)).prepare().url
                        same_origin = _origin(target) == _origin(response.url)  # both as prepared
                    except (requests.RequestException, LocationParseError, ValueError):
                        raise DeliveryFailed("redirect to an invalid URL refused") from None
                    if not same_origin:
                        raise DeliveryFailed(f"redirect to another origin refused: {targets.origin(target)}")
                    url = target
                    continue
                try:
                    _read_capped(response, time.monotonic() + TIMEOUT[1])
                except (requests.RequestException, HTTPError, OSError) as exc:  # urllib3's own, read from .raw
                    raise DeliveryFailed(f"reading the answer failed: {_describe(exc)}") from None
                if not 200 <= response.status_code < 300:
                    raise DeliveryFailed(f"answered {response.status_code}")
                return response
    raise DeliveryFailed(f"more than {MAX_REDIRECTS} redirects")


@deliver_webhook.stage(retries=RETRIES, backoff=BACKOFF, timeout=60, throws=(GaveUp,))
def deliver(ctx: StageContext) -> dict:
    payload = ctx.event.payload
    subscription = WebhookSubscription.objects.filter(pk=payload["subscription_id"]).first()
    if subscription is None:
        raise GaveUp(f"subscription {payload['subscription_id']} no longer exists")
    if not subscription.active:
        return {"skipped": "subscription disabled", "subscription": subscription.name}
    try:
        response = post(subscription.url, subscription.secret, payload["body"], payload["event_type"], ctx.run_id)
    except DeliveryFailed as exc:
        last = ctx.attempt >= min(RETRIES + 1, max(1, subscription.max_attempts))
        ctx.log.warning("webhook.delivery_failed", subscription_id=subscription.pk, subscription=subscription.name,
                        target=targets.origin(subscription.url), reason=exc.detail, outcome=str(exc),
                        final=last)
        if last:
            _count_failure(ctx, subscription.pk, str(exc))
            raise GaveUp(str(exc)) from None
        raise
    WebhookSubscription.objects.filter(pk=subscription.pk).exclude(consecutive_failures=0).update(consecutive_failures=0)
    return {"status_code": response.status_code, "subscription": subscription.name, "attempt": ctx.attempt}


def _count_failure(ctx: StageContext, subscription_id: int, error: str) -> None:
    WebhookSubscription.objects.filter(pk=subscription_id).update(consecutive_failures=F("consecutive_failures") + 1)
    row = WebhookSubscription.objects.filter(pk=subscription_id).values(
        "name", "consecutive_failures", "max_consecutive_failures", "active").first()
    if row and row["active"] and row["consecutive_failures"] >= row["max_consecutive_failures"]:
        reason = f"{row['consecutive_failures']} deliveries in a row failed; last: {error}"
        WebhookSubscription.objects.filter(pk=subscription_id, active=True).update(
            active=False, disabled_at=timezone.now(), disabled_reason=reason)
        ctx.log.warning("webhook.disabled", subscription_id=subscription_id, subscription=row["name"],
                        consecutive_failures=row["consecutive_failures"], reason=reason)
