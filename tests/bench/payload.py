"""The ~200-byte dict every system carries through its three stages, and the 64 KiB one of the
payload-size figure."""
from __future__ import annotations

import json

BIG_PAYLOAD_BYTES = 64 * 1024


def make_payload(seq: int) -> dict:
    return {
        "seq": seq,
        "customer_email": "ada.lovelace@example.com",
        "items": [{"sku": "BOOK-1", "quantity": 2}, {"sku": "PEN-7", "quantity": 1}],
        "total_cents": 4200,
        "note": "benchmark payload, three no-op stages pass it along unchanged",
    }


def make_big_payload(seq: int) -> dict:
    """`make_payload` plus a `blob` filling it to BIG_PAYLOAD_BYTES of compact JSON (seq of the
    same number of digits)."""
    data = {**make_payload(seq), "blob": ""}
    room = BIG_PAYLOAD_BYTES - len(json.dumps(data, separators=(",", ":")))
    data["blob"] = "x" * max(0, room)
    return data


PAYLOAD_BYTES = len(json.dumps(make_payload(123456), separators=(",", ":")))
