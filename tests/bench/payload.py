"""The ~200-byte dict every system carries through its three stages."""
from __future__ import annotations

import json


def make_payload(seq: int) -> dict:
    return {
        "seq": seq,
        "customer_email": "ada.lovelace@example.com",
        "items": [{"sku": "BOOK-1", "quantity": 2}, {"sku": "PEN-7", "quantity": 1}],
        "total_cents": 4200,
        "note": "benchmark payload, three no-op stages pass it along unchanged",
    }


PAYLOAD_BYTES = len(json.dumps(make_payload(123456), separators=(",", ":")))
