"""How many server-sent event streams one web process holds open: per client and in total.

An open stream holds a thread of a threaded server (gunicorn's gthread, `runserver`) until its run
ends, up to `live.MAX_STREAM_SECONDS`. Without a bound, a few clients opening streams take every
thread, and `/healthz` stops answering (the orchestrator then restarts the pod). So each web
process counts its open streams: beyond `PIPELINE_SSE_MAX_STREAMS_PER_CLIENT` from one client a new
stream is refused with 429, beyond `PIPELINE_SSE_MAX_STREAMS` in all with 503, both with a JSON
body and `Retry-After`; the order page then falls back to polling its `.json`.

`infra/gunicorn.conf.py` sets `PIPELINE_SSE_MAX_STREAMS` to half of each worker's threads, so the
other half always serves ordinary requests. A client is its API token when it has one, else its
address (`REMOTE_ADDR`; behind a proxy, that is the proxy's unless it is made the client's).
The counts are per process: the limits of a deployment are these times its web processes."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Iterator

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse

from pipeline import conf

RETRY_AFTER_SECONDS = 10

_lock = threading.Lock()
_open: Counter[str] = Counter()


def _limit(name: str) -> int:
    raw = conf.get(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"{name}={raw!r}: use a whole number of streams (at least 1)") from None
    if value < 1:
        raise ImproperlyConfigured(f"{name}={raw!r}: use a whole number of streams (at least 1)")
    return value


def max_streams() -> int:
    return _limit("PIPELINE_SSE_MAX_STREAMS")


def max_streams_per_client() -> int:
    return _limit("PIPELINE_SSE_MAX_STREAMS_PER_CLIENT")


def client_key(request: HttpRequest) -> str:
    token = getattr(request, "api_token", None)
    if token is not None:
        return f"token:{token.pk}"
    return f"addr:{request.META.get('REMOTE_ADDR', '')}"


class Slot:
    """One open stream's place; released once, whichever of close() or the end comes first."""

    def __init__(self, client: str) -> None:
        self.client = client
        self._released = False

    def release(self) -> None:
        with _lock:
            if self._released:
                return
            self._released = True
            _open[self.client] -= 1
            if _open[self.client] <= 0:
                del _open[self.client]


def acquire(request: HttpRequest) -> Slot | JsonResponse:
    """A slot for a new stream from this request's client, or the 429/503 response refusing it."""
    client = client_key(request)
    per_client, total = max_streams_per_client(), max_streams()
    with _lock:
        if _open[client] >= per_client:
            refusal = JsonResponse({
                "error": f"too many open event streams from this client (at most {per_client} per web process); "
                         "close one, or poll the .json instead",
                "limit": per_client, "retry_after_seconds": RETRY_AFTER_SECONDS}, status=429)
        elif sum(_open.values()) >= total:
            refusal = JsonResponse({
                "error": f"this web process has its maximum of {total} open event streams; retry later, "
                         "or poll the .json instead",
                "limit": total, "retry_after_seconds": RETRY_AFTER_SECONDS}, status=503)
        else:
            _open[client] += 1
            return Slot(client)
    refusal["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return refusal


def open_streams() -> int:
    with _lock:
        return sum(_open.values())


class HeldStream:
    """The body of a streaming response that holds `slot` while it is open: released when the
    stream ends, and when the server closes the response (the client went away), even if the
    body was never iterated."""

    def __init__(self, chunks: Iterator[str], slot: Slot) -> None:
        self._chunks = chunks
        self._slot = slot

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._chunks
        finally:
            self._slot.release()

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._slot.release()
