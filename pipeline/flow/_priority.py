"""Priority by separate queues: an urgent stage message goes to `<queue>.urgent`, which every
worker consuming `<queue>` also consumes, so it overtakes what waits in `<queue>`.

Why separate queues rather than RabbitMQ priority queues (`x-max-priority`): that argument
cannot be added to a queue that exists (RabbitMQ refuses the redeclaration), and quorum queues
(`PIPELINE_QUEUE_TYPE=quorum`) on RabbitMQ 3.x have no priorities at all; a second queue works
the same on both queue types. What it cannot do: overtake the messages a worker has prefetched
already (at most 2 x its threads per process), which then run first."""
from __future__ import annotations

from typing import Any

from ._rules import URGENT

SUFFIX = ".urgent"


def urgent_queue(queue_name: str) -> str:
    return queue_name + SUFFIX


def declare_urgent_queue(actor: Any) -> None:
    """Declares the actor's urgent twin queue on its broker (consumed by the workers)."""
    actor.broker.declare_queue(urgent_queue(actor.queue_name))


def route(message: Any, priority: str | None) -> Any:
    """The message to publish: on the urgent twin of its queue when `priority` is urgent."""
    if priority != URGENT or message.queue_name.endswith(SUFFIX):
        return message
    return message.copy(queue_name=urgent_queue(message.queue_name))
