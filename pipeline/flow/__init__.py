"""Flow control without Redis, kept in the run store and RabbitMQ only, so every worker process
on every host sees the same limits:

- rate limits and throttles, debounce, priority and batching (`rules`, `rate`, `windows`,
  `priority`; applied to a stage message by `gate`, before its claim);
- concurrency per key and in all (round-robin across keys), a stage's own concurrency, and
  singletons (`concurrency`, `singleton`; waiting runs are rows, not threads: `slots`,
  `stage_slots`, `slots_gate`).

`admission.admit` is the one entry point the runtime calls before a stage is claimed. A
pipeline or stage that declares nothing is never gated, so the hot path does not change.

Importable before Django's app registry is ready (declarations happen at import time): the
modules that touch the run store are imported where they are used."""
from __future__ import annotations

from ._concurrency import Concurrency
from ._keys import GLOBAL_KEY, check_key, key_of
from ._rules import NORMAL, URGENT, Batch, Debounce, RateLimit
from ._singleton import Singleton

__all__ = [
    # rates, windows, priority
    "RateLimit", "Debounce", "Batch", "NORMAL", "URGENT",
    # concurrency and singletons
    "Concurrency", "Singleton",
    # keys
    "check_key", "key_of", "GLOBAL_KEY",
]
