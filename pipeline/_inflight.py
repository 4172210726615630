"""Which stage each message is running right now, when a linear chain has moved a message on from
its own stage (see `pipeline._runtime`). Drain and Heartbeat report in-flight work by stage, so
they ask here; no Django import, so middleware can use it while the broker is being set up."""
from __future__ import annotations

# message id -> actor name of the stage it runs now (only while that is not the message's own)
running_inline: dict[str, str] = {}


def stage_running(message_id: str, actor_name: str) -> str:
    """The actor name of the stage the message `message_id` is running now."""
    return running_inline.get(message_id, actor_name)
