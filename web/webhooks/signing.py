"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>", the same function on both sides.

Headers of every delivery:

    X-Pipeline-Timestamp: 1764146400                 (Unix seconds when the attempt was sent)
    X-Pipeline-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

A receiver recomputes the signature over the raw body bytes it received, compares in constant
time, and refuses timestamps too far from its clock (replays). The README shows `verify` below."""
from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


# The README shows this function whole.
def verify(secret: str, body: bytes, timestamp: str, signature: str, tolerance: int = 300) -> bool:
    """True if `signature` (X-Pipeline-Signature) signs `body` at `timestamp` (X-Pipeline-Timestamp)."""
    import hashlib  # inside: the function stands alone, for a receiver to copy as it is
    import hmac
    import time

    try:
        if abs(time.time() - int(timestamp)) > tolerance:
            return False
    except ValueError:
        return False
    expected = "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    return {"X-Pipeline-Timestamp": timestamp, "X-Pipeline-Signature": sign(secret, timestamp, body)}
