"""Long delays in hops: a delayed message due later than the broker would let a worker hold it.

Why: Dramatiq holds a delayed message (a retry's backoff, a deferred stage) unacknowledged in the
worker's memory until its eta. RabbitMQ closes a channel whose delivery stays unacknowledged past
`consumer_timeout` (30 min by default, on every queue type since 3.8.15), which hands back every
message of that worker, the running ones too. `PipelineBroker.enqueue` therefore publishes a
delay longer than `PIPELINE_MAX_HELD_DELAY_SECONDS` with that much delay and the real due time in
the message (`not_before`); when such a message comes due early, this middleware publishes it
again for the time left and skips it (the skipped delivery is acknowledged after the new publish)."""
from __future__ import annotations

from typing import Any

from dramatiq.common import current_millis
from dramatiq.middleware import Middleware, SkipMessage

from ..logging import get_logger
from ..rabbitmq import NOT_BEFORE

log = get_logger("pipeline.delays")


class LongDelays(Middleware):
    def before_process_message(self, broker: Any, message: Any) -> None:
        due = message.options.get(NOT_BEFORE)
        if due is None:
            return
        left = int(due) - current_millis()
        if left <= 0:
            return
        broker.enqueue(message.copy(), delay=left)
        log.info("message.delay_hop", message_id=message.message_id, actor=message.actor_name,
                 run_id=message.options.get("run_id"), due_in_ms=left)
        raise SkipMessage("not due yet: published again for the time left")
