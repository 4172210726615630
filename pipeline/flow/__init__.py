"""Flow control without Redis: rate limits and throttles, debounce, priority and batching
(and, from its sibling modules, concurrency, fairness and singletons), kept in the run store
and RabbitMQ only, so every worker process on every host sees the same limits.

Declarations are the dataclasses of `pipeline.flow.rules`, exported by `pipeline`; a stage
that declares nothing is never gated (`Stage.gated`), so the hot path does not change."""
from __future__ import annotations

from .rules import NORMAL, URGENT, Batch, Debounce, RateLimit

__all__ = ["RateLimit", "Debounce", "Batch", "NORMAL", "URGENT"]
