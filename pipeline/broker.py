"""Reaching the broker: one clear sentence when it cannot be reached, not a pika traceback storm."""
from __future__ import annotations

import logging
import socket

import pika

from . import conf
from .errors import BrokerUnavailable


def redacted_url(url: str) -> str:
    """The broker address without its credentials, for messages and logs."""
    params = pika.URLParameters(url)
    vhost = "/" if params.virtual_host == "/" else "/" + params.virtual_host
    return f"amqp://{params.host}:{params.port}{vhost}"


def check_broker(url: str | None = None, timeout: float = 3.0) -> None:
    """Opens and closes one AMQP connection, or raises BrokerUnavailable saying what to do."""
    url = url or conf.get("PIPELINE_BROKER_URL")
    params = pika.URLParameters(url)
    hint = "start the local node with `infra/rabbitmq.sh start` or set PIPELINE_BROKER_URL to a running broker"
    try:
        socket.create_connection((params.host, params.port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {redacted_url(url)} ({reason}); {hint}") from None
    params.connection_attempts = 1
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    pika_logger.setLevel(logging.CRITICAL)  # pika logs each failed step at ERROR; we say it once
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.ProbableAuthenticationError:
        raise BrokerUnavailable(
            f"RabbitMQ at {redacted_url(url)} refused the credentials in PIPELINE_BROKER_URL"
        ) from None
    except Exception as exc:
        reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        raise BrokerUnavailable(f"cannot open an AMQP connection to {redacted_url(url)} ({reason}); {hint}") from None
    finally:
        pika_logger.setLevel(level)
