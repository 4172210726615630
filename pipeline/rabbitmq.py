"""Dramatiq's RabbitMQ broker, declaring the queues our way and reaching several nodes.

- Nodes: `PIPELINE_BROKER_URL` may list several (see `pipeline._broker`); Dramatiq hands the list
  to pika, which connects to the first that answers, and reconnects the same way after a loss.
- Queue type (`PIPELINE_QUEUE_TYPE`): with `quorum`, the stage queues, their `.DQ` delay queues
  and `.XQ` dead-letter queues are quorum queues (replicated on a cluster), with a delivery limit
  (`PIPELINE_DELIVERY_LIMIT`) so a message that kills its worker every time is dead-lettered,
  and without `x-max-priority` (RabbitMQ 3.x quorum queues have no priorities). Dramatiq itself
  declares classic queues only; this is the one place that changes.
- A queue cannot change type in place: declaring a classic queue as quorum (or the other way)
  is refused by RabbitMQ; `QueueTypeMismatch` says so and points at the migration steps.
- Publisher confirms (`PIPELINE_PUBLISH_CONFIRMS`): Dramatiq's `confirm_delivery`. A publish then
  returns once the broker has the message (on a quorum queue: a majority of its nodes), and a
  publish that is not confirmed raises, after Dramatiq's retries on a fresh connection (the next
  node): the caller leaves the stage pending for the relay.
- Delays longer than `PIPELINE_MAX_HELD_DELAY_SECONDS` are published in hops (see
  `pipeline.middleware.LongDelays`): a worker never holds one delivery past `consumer_timeout`."""
from __future__ import annotations

from typing import Any

import pika
from django.core.exceptions import ImproperlyConfigured
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import current_millis, dq_name, xq_name

from . import _broker as settings_
from .logging import get_logger

log = get_logger("pipeline.broker")

NOT_BEFORE = "not_before"  # message option: the real due time (ms) of a delay published in hops


class QueueTypeMismatch(ImproperlyConfigured):
    """Raised when a queue already exists on the broker with another type than PIPELINE_QUEUE_TYPE."""


class PipelineBroker(RabbitmqBroker):
    def __init__(
        self, *, url: str | list[str] | None = None, queue_type: str | None = None,
        confirm_delivery: bool | None = None, max_priority: int | None = None, **kwargs: Any,
    ) -> None:
        self.queue_type = queue_type or settings_.queue_type()
        if self.queue_type not in settings_.QUEUE_TYPES:
            raise ImproperlyConfigured(f"PIPELINE_QUEUE_TYPE={self.queue_type!r}: use classic or quorum")
        if self.queue_type == "quorum" and max_priority:
            raise ImproperlyConfigured("PIPELINE_QUEUE_TYPE=quorum: quorum queues have no x-max-priority; "
                                       "leave the broker's max_priority unset")
        self.delivery_limit = settings_.delivery_limit()
        self.max_held_delay_ms = settings_.max_held_delay_ms()
        confirm = settings_.publish_confirms() if confirm_delivery is None else confirm_delivery
        if not kwargs.get("parameters") and not {"host", "port"} & set(kwargs):
            url = [settings_.with_client_defaults(u) for u in settings_.broker_urls(url)]
        super().__init__(url=url, confirm_delivery=confirm, max_priority=max_priority, **kwargs)

    # --- queue declarations ---------------------------------------------------------------------
    def _quorum(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.queue_type != "quorum":
            return arguments
        arguments.pop("x-max-priority", None)
        return {**arguments, "x-queue-type": "quorum", "x-delivery-limit": self.delivery_limit}

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return self._quorum(super()._build_queue_arguments(queue_name))

    def _declare_queue(self, queue_name: str) -> Any:
        return self._declared(queue_name, lambda: super(PipelineBroker, self)._declare_queue(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declared(dq_name(queue_name), lambda: super(PipelineBroker, self)._declare_dq_queue(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        if self.queue_type != "quorum":
            return self._declared(xq_name(queue_name),
                                  lambda: super(PipelineBroker, self)._declare_xq_queue(queue_name))
        arguments = {"x-message-ttl": DEAD_MESSAGE_TTL, "x-queue-type": "quorum"}
        return self._declared(xq_name(queue_name), lambda: self.channel.queue_declare(
            queue=xq_name(queue_name), durable=True, arguments=arguments))

    def _declared(self, name: str, declare: Any) -> Any:
        try:
            return declare()
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406 and "x-queue-type" in str(exc.reply_text):
                del self.connection  # the channel is closed: the next caller opens a new one
                error = QueueTypeMismatch(
                    f"queue {name!r} already exists on the broker with another type than "
                    f"PIPELINE_QUEUE_TYPE={self.queue_type} asks for; a queue cannot change type in place: "
                    "drain it and delete it (or use a new vhost), see infra/README.md, "
                    "'Moving from classic to quorum queues'")
                log.error("broker.queue_type_mismatch", queue=name, queue_type=self.queue_type, error=str(error))
                raise error from None
            raise

    # --- delays ---------------------------------------------------------------------------------
    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        if delay is not None and delay > self.max_held_delay_ms:
            # The real due time travels in the message; each hop is at most max_held_delay_ms.
            message = message.copy(options={NOT_BEFORE: current_millis() + delay})
            delay = self.max_held_delay_ms
        return super().enqueue(message, delay=delay)


def check_queue_types(broker: Any, names: list[str] | None = None) -> None:
    """Declares the stage queues (`names`, default: every queue of the broker's actors), their
    `.DQ` and `.XQ`, the way the workers will, on a connection of its own, and raises
    `QueueTypeMismatch` for the first one that exists with another type. Why: a worker that finds
    out only when its consumer starts retries forever; `rundramatiq` says it once, at start."""
    if not isinstance(broker, PipelineBroker):
        return
    names = sorted({n for n in (names or broker.get_declared_queues()) if not n.endswith((".DQ", ".XQ"))})
    connection = pika.BlockingConnection(broker.parameters)
    try:
        for name in names:
            for queue, arguments in ((name, broker._build_queue_arguments(name)),
                                     (dq_name(name), broker._build_queue_arguments(name)),
                                     (xq_name(name), {"x-message-ttl": DEAD_MESSAGE_TTL,
                                                      **({"x-queue-type": "quorum"} if broker.queue_type == "quorum"
                                                         else {})})):
                try:
                    connection.channel().queue_declare(queue=queue, durable=True, arguments=arguments)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code == 406 and "x-queue-type" in str(exc.reply_text):
                        raise QueueTypeMismatch(
                            f"queue {queue!r} already exists on the broker with another type than "
                            f"PIPELINE_QUEUE_TYPE={broker.queue_type} asks for; a queue cannot change type in place: "
                            "drain it and delete it (or use a new vhost), see infra/README.md, "
                            "'Moving from classic to quorum queues'") from None
                    raise
    finally:
        if connection.is_open:
            connection.close()
