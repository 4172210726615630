"""The completion signal every benchmarked system sends when a run's last stage is done: one tiny
transient message on `BENCH_DONE_QUEUE`, published on a per-thread pika connection (pika is not
thread-safe). It costs the same for every system, and the driver counts these messages."""
from __future__ import annotations

import os
import threading

import pika

_local = threading.local()


def _channel():
    channel = getattr(_local, "channel", None)
    if channel is None or channel.is_closed:
        params = pika.URLParameters(os.environ["BENCH_BROKER_URL"])
        # No heartbeats: a worker thread may send nothing for minutes while other systems are
        # measured, and a blocking connection only answers heartbeats while it is used.
        params.heartbeat = 0
        _local.connection = pika.BlockingConnection(params)
        channel = _local.connection.channel()
        _local.channel = channel
    return channel


def signal_done(body: bytes = b"1", queue: str | None = None) -> None:
    queue = queue or os.environ["BENCH_DONE_QUEUE"]
    for attempt in (1, 2):
        try:
            _channel().basic_publish(exchange="", routing_key=queue, body=body)
            return
        except (pika.exceptions.AMQPError, OSError):
            _local.channel = None
            if attempt == 2:
                raise
