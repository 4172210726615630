"""Queue depth and consumers, read from RabbitMQ with passive declares (which never create a
queue), with short timeouts: an unreachable broker is one sentence on the page, never an error page."""
from __future__ import annotations

import socket
from dataclasses import dataclass

import dramatiq
import pika

from pipeline import broker_urls, conf, for_probe, quiet_pika, redacted_url, registry

TIMEOUT_SECONDS = 2.0


@dataclass
class QueueStats:
    name: str
    ready: int | None = None  # messages waiting to be delivered
    consumers: int | None = None
    delayed: int | None = None  # `<name>.DQ`: retries waiting for their backoff
    dead: int | None = None  # `<name>.XQ`: dead-lettered messages (RabbitMQ drops them after 7 days)
    missing: bool = False  # not declared on the broker yet: no message was ever sent to it


def stage_queues() -> list[str]:
    """The queues of every registered stage actor (and any other queue declared in this process)."""
    names = {stage.actor.queue_name for pipeline in registry.pipelines.values() for stage in pipeline.stages.values()}
    try:
        names |= {q for q in dramatiq.get_broker().get_declared_queues() if not q.endswith((".DQ", ".XQ"))}
    except Exception:
        pass
    return sorted(names)


def queue_stats(url: str | None = None, names: list[str] | None = None) -> tuple[list[QueueStats], str | None]:
    """(stats per queue, None) from the first node of PIPELINE_BROKER_URL that answers, or
    ([], a sentence saying why the broker could not be read)."""
    url = url or conf.get("PIPELINE_BROKER_URL")
    names = stage_queues() if names is None else names
    try:
        nodes = broker_urls(url)
    except Exception as exc:
        return [], f"broker unreachable: {exc}"
    errors = []
    for node in nodes:
        stats, error = _queue_stats_on(node, names)
        if error is None:
            return stats, None
        errors.append(error)
    return [], errors[0] if len(errors) == 1 else "; ".join(errors)


def _queue_stats_on(url: str, names: list[str]) -> tuple[list[QueueStats], str | None]:
    try:
        params = pika.URLParameters(url)
        where = redacted_url(url)
    except Exception as exc:
        return [], f"broker unreachable: PIPELINE_BROKER_URL is not a valid AMQP URL ({exc})"
    try:
        socket.create_connection((params.host, params.port), timeout=TIMEOUT_SECONDS).close()
    except OSError as exc:
        return [], f"broker unreachable at {where} ({exc.strerror or exc})"
    with quiet_pika():  # for the whole read: a missing queue's 404 is no error here
        try:
            connection = pika.BlockingConnection(for_probe(params, TIMEOUT_SECONDS, TIMEOUT_SECONDS * 2))
        except Exception as exc:
            return [], f"broker unreachable at {where} ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
        try:
            channel = connection.channel()
            rows = []
            for name in names:
                row = QueueStats(name)
                for queue, attr in ((name, "ready"), (f"{name}.DQ", "delayed"), (f"{name}.XQ", "dead")):
                    try:
                        frame = channel.queue_declare(queue=queue, passive=True)
                    except pika.exceptions.ChannelClosedByBroker:  # 404: no such queue
                        channel = connection.channel()
                        if attr == "ready":
                            row.missing = True
                        continue
                    setattr(row, attr, frame.method.message_count)
                    if attr == "ready":
                        row.consumers = frame.method.consumer_count
                rows.append(row)
            return rows, None
        except Exception as exc:
            return [], f"broker at {where} did not answer ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
        finally:
            try:
                if connection.is_open:
                    connection.close()
            except Exception:
                pass
