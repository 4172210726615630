"""Reaching the broker: which nodes (`PIPELINE_BROKER_URL` may list several), how its queues are
declared (`PIPELINE_QUEUE_TYPE`), whether publishes are confirmed (`PIPELINE_PUBLISH_CONFIRMS`),
and one clear sentence when no node can be reached, not a pika traceback storm.

Several nodes: pika's `BlockingConnection` takes a list of connection parameters and connects to
the first that answers, in order. Dramatiq opens a new connection whenever one is lost (a
consumer restarts itself a few seconds later; a publish retries up to six times), so with the list
every process moves to a surviving node by itself, without a restart."""
from __future__ import annotations

import logging
import re
import socket
from contextlib import contextmanager
from typing import Any, Iterator

import pika
from django.core.exceptions import ImproperlyConfigured

from . import conf
from .errors import BrokerUnavailable

QUEUE_TYPES = ("classic", "quorum")
# Added to each node's URL unless it sets them: heartbeats let RabbitMQ notice a dead worker host
# and redeliver its unacked stages; a blocked connection (broker out of memory or disk) fails.
CLIENT_DEFAULTS = (("heartbeat", "30"), ("blocked_connection_timeout", "30"))
_SEPARATORS = re.compile(r"[,;\s]+")


def _setting(name: str, default: Any) -> Any:
    """The setting's value through `conf` (a Django setting, else the environment variable)."""
    value = conf.get(name)
    return default if value is None or value == "" else value


def broker_urls(value: str | list[str] | None = None) -> list[str]:
    """The nodes of `PIPELINE_BROKER_URL` (or `value`): one AMQP URL, or several separated by
    commas, semicolons or whitespace, tried in that order. Refused (naming the variable) if one is
    not an amqp:// or amqps:// URL."""
    raw = conf.get("PIPELINE_BROKER_URL") if value is None else value
    parts = [u for u in (raw if isinstance(raw, (list, tuple)) else _SEPARATORS.split(str(raw))) if u]
    if not parts:
        raise ImproperlyConfigured("PIPELINE_BROKER_URL is empty: give one or more amqp:// URLs")
    for url in parts:
        if not url.startswith(("amqp://", "amqps://")):
            raise ImproperlyConfigured(
                f"PIPELINE_BROKER_URL: {_redact(url)!r} is not an amqp:// or amqps:// URL (several nodes: "
                "separate their URLs with commas or spaces)")
        try:
            pika.URLParameters(url)
        except Exception as exc:
            raise ImproperlyConfigured(f"PIPELINE_BROKER_URL: {_redact(url)!r} is not a valid AMQP URL ({exc})") from None
    return parts


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def with_client_defaults(url: str) -> str:
    """`url` with our heartbeat and blocked-connection timeout unless it sets its own (pika
    refuses a repeated one)."""
    missing = [f"{k}={v}" for k, v in CLIENT_DEFAULTS if f"{k}=" not in url]
    if not missing:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(missing)


def connection_parameters(value: str | list[str] | None = None) -> list[pika.URLParameters]:
    """One pika parameters object per node, in order (what `pika.BlockingConnection` takes)."""
    return [pika.URLParameters(with_client_defaults(u)) for u in broker_urls(value)]


def redacted_url(url: str | list[str] | None = None) -> str:
    """The broker address(es) without credentials, for messages and logs."""
    out = []
    for u in broker_urls(url):
        params = pika.URLParameters(u)
        vhost = "/" if params.virtual_host == "/" else "/" + params.virtual_host
        out.append(f"amqp://{params.host}:{params.port}{vhost}")
    return ", ".join(out)


def queue_type() -> str:
    """`PIPELINE_QUEUE_TYPE`: classic (the default, one node) or quorum (replicated, a cluster)."""
    raw = _setting("PIPELINE_QUEUE_TYPE", "classic")
    value = str(raw).strip().lower()
    if value not in QUEUE_TYPES:
        raise ImproperlyConfigured(f"PIPELINE_QUEUE_TYPE={raw!r}: use classic or quorum")
    return value


def publish_confirms() -> bool:
    """`PIPELINE_PUBLISH_CONFIRMS`: wait for the broker to confirm each stage message. Default: on
    with quorum queues (a cluster, where a node can die with a message it never stored), off with
    classic ones (one node: a lost publish is re-published by the relay; confirms cost ~2x there)."""
    raw = _setting("PIPELINE_PUBLISH_CONFIRMS", None)
    if raw is None:
        return queue_type() == "quorum"
    if isinstance(raw, bool):
        return raw
    flags = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    try:
        return flags[str(raw).strip().lower()]
    except KeyError:
        raise ImproperlyConfigured(f"PIPELINE_PUBLISH_CONFIRMS={raw!r}: use 1 or 0 (or true/false, yes/no, on/off)") from None


def _positive_int(name: str, default: int) -> int:
    raw = _setting(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ImproperlyConfigured(f"{name}={raw!r}: use a whole number above 0")
    return value


def delivery_limit() -> int:
    """`PIPELINE_DELIVERY_LIMIT` (quorum queues): deliveries of one message before it is
    dead-lettered, so a message that kills its worker every time stops going round (default 20)."""
    return _positive_int("PIPELINE_DELIVERY_LIMIT", 20)


def max_held_delay_ms() -> int:
    """`PIPELINE_MAX_HELD_DELAY_SECONDS` (default 900): the longest a worker holds a delayed message
    unacknowledged. Longer delays are re-published in hops of at most this (see
    `pipeline.middleware.LongDelays`), so RabbitMQ's `consumer_timeout` (30 min by default) never
    closes a worker's channel under a long retry backoff."""
    return _positive_int("PIPELINE_MAX_HELD_DELAY_SECONDS", 900) * 1000


def for_probe(params: pika.URLParameters, timeout: float, stack_timeout: float | None = None) -> pika.URLParameters:
    """`params` set for a short-lived probe (a health check, a queue-depth read): one attempt,
    each wait bounded by `timeout`."""
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    if stack_timeout is not None:
        params.stack_timeout = stack_timeout
    return params


@contextmanager
def quiet_pika() -> Iterator[None]:
    """pika logs each failed step of a connection at ERROR, with tracebacks; a probe says once
    what failed, so pika's own lines are silenced meanwhile."""
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    pika_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        pika_logger.setLevel(level)


def check_broker(url: str | list[str] | None = None, timeout: float = 3.0) -> None:
    """Opens and closes one AMQP connection to the first node that accepts one, or raises
    BrokerUnavailable saying what each node answered and what to do."""
    urls = broker_urls(url)
    hint = "start the local node with `infra/rabbitmq.sh start` or set PIPELINE_BROKER_URL to a running broker"
    reasons = []
    for node in urls:
        try:
            _check_node(node, timeout)
            return
        except BrokerUnavailable as exc:
            if "refused the credentials" in str(exc):
                raise
            reasons.append(str(exc))
    where = redacted_url(urls)
    if len(urls) == 1:
        raise BrokerUnavailable(f"{reasons[0]}; {hint}")
    raise BrokerUnavailable(f"no RabbitMQ node of {where} can be reached ({'; '.join(reasons)}); {hint}")


def _check_node(url: str, timeout: float) -> None:
    params = pika.URLParameters(url)
    where = redacted_url(url)
    try:
        socket.create_connection((params.host, params.port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {where} ({reason})") from None
    try:
        with quiet_pika():
            pika.BlockingConnection(for_probe(params, timeout)).close()
    except pika.exceptions.ProbableAuthenticationError:
        raise BrokerUnavailable(f"RabbitMQ at {where} refused the credentials in PIPELINE_BROKER_URL") from None
    except Exception as exc:
        reason = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        raise BrokerUnavailable(f"cannot open an AMQP connection to {where} ({reason})") from None
