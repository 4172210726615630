"""Reaching the broker: one clear sentence when it cannot be reached, not a pika traceback storm."""
from __future__ import annotations

import pika

from . import conf


class BrokerUnavailable(Exception):
    pass


def redacted_url(url: str) -> str:
    params = pika.URLParameters(url)
    return f"amqp://{params.host}:{params.port}{'/' if params.virtual_host == '/' else '/' + params.virtual_host}"


def check_broker(url: str | None = None, timeout: float = 3.0) -> None:
    """Opens and closes one AMQP connection, or raises BrokerUnavailable saying what to do."""
    url = url or conf.get("PIPELINE_BROKER_URL")
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    try:
        connection = pika.BlockingConnection(params)
    except Exception as exc:
        reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        raise BrokerUnavailable(
            f"cannot reach RabbitMQ at {redacted_url(url)} ({reason}); start the local node with "
            f"`infra/rabbitmq.sh start` or set PIPELINE_BROKER_URL to a running broker"
        ) from None
    connection.close()
