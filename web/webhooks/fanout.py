"""From completion events to webhook deliveries, in the transaction that ended the run.

`wants` tells the engine an outcome has a listener (so it is emitted at all); `deliveries_for`
emits one `webhook.delivery` event per matching active subscription, each starting a run of the
`deliver_webhook` pipeline. Active subscriptions are cached per process for CACHE_SECONDS, so
the engine's hot path does not query them at every run's end; a change shows within that time."""
from __future__ import annotations

import json
import threading
import time

from pipeline import Event, emit

from .models import WebhookSubscription

CACHE_SECONDS = 5.0
_lock = threading.Lock()
_cache: tuple[float, list[dict]] = (0.0, [])


def active_subscriptions() -> list[dict]:
    global _cache
    now = time.monotonic()
    with _lock:
        loaded_at, subscriptions = _cache
        if now - loaded_at < CACHE_SECONDS:
            return subscriptions
    subscriptions = list(
        WebhookSubscription.objects.filter(active=True).values("id", "event_types", "pipelines")
    )
    with _lock:
        _cache = (now, subscriptions)
    return subscriptions


def forget_cache() -> None:
    global _cache
    with _lock:
        _cache = (0.0, [])


def _matches(subscription: dict, event_type: str, pipeline: str) -> bool:
    return event_type in subscription["event_types"] and (
        not subscription["pipelines"] or pipeline in subscription["pipelines"]
    )


def wants(event_type: str, pipeline: str) -> bool:
    return any(_matches(s, event_type, pipeline) for s in active_subscriptions())


def deliveries_for(event_type: str, payload: dict, outcome_event_id: str) -> None:
    matching = [s for s in active_subscriptions() if _matches(s, event_type, payload["pipeline"])]
    if not matching:
        return
    trace_id = Event.objects.filter(id=outcome_event_id).values_list("trace_id", flat=True).first()
    body = json.dumps({"id": str(outcome_event_id), "type": event_type, "data": payload}, sort_keys=True)
    for subscription in matching:
        emit(
            "webhook.delivery",
            {"subscription_id": subscription["id"], "event_type": event_type,
             "event_id": str(outcome_event_id), "body": body},
            idempotency_key=f"webhook:{subscription['id']}:{outcome_event_id}",
            trace_id=trace_id,
            source=f"webhook:{subscription['id']}",
            engine=True,
        )
