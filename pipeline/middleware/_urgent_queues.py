"""A worker started for some queues (`rundramatiq --queues q`) consumes their urgent twins
(`q.urgent`, see `pipeline.flow._priority`) too: urgent messages must not need a second flag."""
from __future__ import annotations

from typing import Any

from dramatiq.middleware import Middleware

from ..flow._priority import SUFFIX, urgent_queue


class UrgentQueues(Middleware):
    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        queues = getattr(worker, "consumer_whitelist", None)
        if queues:
            worker.consumer_whitelist = set(queues) | {urgent_queue(q) for q in queues if not q.endswith(SUFFIX)}
