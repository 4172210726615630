"""The depth and consumers of every stage queue, read from the broker by passive declares."""
from __future__ import annotations

import dramatiq
import pika

from ..broker import connection_parameters, for_probe, quiet_pika

QUEUE_CHECK_TIMEOUT = 2.0


def stage_queue_names() -> list[str]:
    """The queues stage actors are declared on, each with its delay and dead-letter queue."""
    names: set[str] = set()
    for queue in dramatiq.get_broker().get_declared_queues():
        base = queue[:-3] if queue.endswith((".DQ", ".XQ")) else queue
        names.update((base, f"{base}.DQ", f"{base}.XQ"))
    return sorted(names)


def queue_states(url: str | None = None, timeout: float = QUEUE_CHECK_TIMEOUT) -> dict[str, tuple[int, int]]:
    """(messages ready, consumers) of each stage queue, by passive declares on one short-lived
    connection; a queue that does not exist yet is left out."""
    # Every node, in order: pika takes the first that answers.
    params = [for_probe(node, timeout, timeout + 1) for node in connection_parameters(url)]
    with quiet_pika():
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            states: dict[str, tuple[int, int]] = {}
            for name in stage_queue_names():
                try:
                    frame = channel.queue_declare(queue=name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
                    channel = connection.channel()
                    continue
                states[name] = (frame.method.message_count, frame.method.consumer_count)
            return states
        finally:
            if connection.is_open:
                connection.close()
