"""The dashboard's queue table: depth, consumers, retries waiting and dead letters of every stage
queue, from the engine's one queue reader (`pipeline.queue_depths`, passive declares with short
timeouts): an unreachable broker is one sentence on the page, never an error page."""
from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from pipeline import BrokerUnavailable, queue_depths, stage_queues

SUFFIXES = (("", "ready"), (".DQ", "delayed"), (".XQ", "dead"))


@dataclass
class QueueStats:
    name: str
    ready: int | None = None  # messages waiting to be delivered
    consumers: int | None = None
    delayed: int | None = None  # `<name>.DQ`: retries waiting for their backoff
    dead: int | None = None  # `<name>.XQ`: dead-lettered messages (RabbitMQ drops them after 7 days)
    missing: bool = False  # not declared on the broker yet: no message was ever sent to it


def queue_stats(url: str | None = None, names: list[str] | None = None) -> tuple[list[QueueStats], str | None]:
    """(stats per queue, None) from the first node of PIPELINE_BROKER_URL that answers, or
    ([], a sentence saying why the broker could not be read)."""
    names = stage_queues() if names is None else names
    try:
        depths = queue_depths((f"{name}{suffix}" for name in names for suffix, _ in SUFFIXES), url=url)
    except (BrokerUnavailable, ImproperlyConfigured) as exc:
        return [], str(exc)
    rows = []
    for name in names:
        row = QueueStats(name, missing=name not in depths)
        for suffix, attribute in SUFFIXES:
            if f"{name}{suffix}" in depths:
                setattr(row, attribute, depths[f"{name}{suffix}"][0])
        if not row.missing:
            row.consumers = depths[name][1]
        rows.append(row)
    return rows, None
