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
from typing import Any, Callable, Iterable, Iterator, TypeVar

import dramatiq
import pika
from django.core.exceptions import ImproperlyConfigured

from . import conf
from ._definitions import registry
from .errors import BrokerUnavailable

QUEUE_TYPES = ("classic", "quorum")
# Added to each node's URL unless it sets them: heartbeats let RabbitMQ notice a dead worker host
# and redeliver its unacked stages; a blocked connection (broker out of memory or disk) fails.
CLIENT_DEFAULTS = (("heartbeat", "30"), ("blocked_connection_timeout", "30"))
_SEPARATORS = re.compile(r"[,;\s]+")
QUEUE_CHECK_TIMEOUT = 2.0  # seconds: a queue-depth read must not hold up a page or a scrape
T = TypeVar("T")


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


def _for_probe(params: pika.URLParameters, timeout: float) -> pika.URLParameters:
    """`params` set for a short-lived probe (a health check, a queue-depth read): one attempt,
    each wait bounded by `timeout`."""
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.stack_timeout = timeout * 2
    return params


@contextmanager
def _quiet_pika() -> Iterator[None]:
    """pika logs each failed step of a connection at ERROR, with tracebacks; a probe says once
    what failed, so pika's own lines are silenced meanwhile."""
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    pika_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        pika_logger.setLevel(level)


@contextmanager
def _probe(node: str, timeout: float) -> Iterator[pika.BlockingConnection]:
    """A short-lived connection to one node, closed on the way out, with pika quiet throughout (a
    missing queue's 404 is no error to a probe); BrokerUnavailable in one sentence if it cannot
    be opened."""
    params = pika.URLParameters(node)
    where = redacted_url(node)
    try:
        socket.create_connection((params.host, params.port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {where} ({reason})") from None
    with _quiet_pika():
        try:
            connection = pika.BlockingConnection(_for_probe(params, timeout))
        except pika.exceptions.ProbableAuthenticationError:
            raise BrokerUnavailable(f"RabbitMQ at {where} refused the credentials in PIPELINE_BROKER_URL") from None
        except Exception as exc:
            raise BrokerUnavailable(f"cannot open an AMQP connection to {where} ({_reason(exc)})") from None
        try:
            yield connection
        finally:
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # closing a connection the broker already dropped
                pass


def _reason(exc: Exception) -> str:
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _first_node(url: str | list[str] | None, timeout: float, work: Callable[[pika.BlockingConnection, str], T]) -> T:
    """`work(connection, where)` on the first node that accepts a connection, in order; or
    BrokerUnavailable saying what each node answered and what to do."""
    urls = broker_urls(url)
    hint = "start the local node with `infra/rabbitmq.sh start` or set PIPELINE_BROKER_URL to a running broker"
    reasons = []
    for node in urls:
        try:
            with _probe(node, timeout) as connection:
                return work(connection, redacted_url(node))
        except BrokerUnavailable as exc:
            if "refused the credentials" in str(exc):
                raise
            reasons.append(str(exc))
    if len(urls) == 1:
        raise BrokerUnavailable(f"{reasons[0]}; {hint}")
    raise BrokerUnavailable(f"no RabbitMQ node of {redacted_url(urls)} can be reached ({'; '.join(reasons)}); {hint}")


def check_broker(url: str | list[str] | None = None, timeout: float = 3.0) -> None:
    """Opens and closes one AMQP connection to the first node that accepts one, or raises
    BrokerUnavailable saying what each node answered and what to do."""
    _first_node(url, timeout, lambda connection, where: None)


def stage_queues() -> list[str]:
    """The queues stage actors consume, without their delay (`.DQ`) and dead-letter (`.XQ`)
    queues: every registered stage's, and any other queue declared in this process."""
    names = {stage.actor.queue_name for pipeline in registry.pipelines.values() for stage in pipeline.stages.values()}
    try:
        declared = dramatiq.get_broker().get_declared_queues()
    except Exception:  # no broker configured in this process: the registry's queues only
        declared = set()
    names |= {queue for queue in declared if not queue.endswith((".DQ", ".XQ"))}
    return sorted(names)


def queue_depths(names: Iterable[str], url: str | list[str] | None = None,
                 timeout: float = QUEUE_CHECK_TIMEOUT) -> dict[str, tuple[int, int]]:
    """(messages ready, consumers) of each queue in `names` that exists, read by passive declares
    (which never create a queue) on one short-lived connection to the first node that answers; a
    queue not declared yet is left out. The one reader of queue depths (the dashboard, the
    metrics). Raises BrokerUnavailable in one sentence if no node answers."""
    wanted = list(names)

    def read(connection: pika.BlockingConnection, where: str) -> dict[str, tuple[int, int]]:
        depths: dict[str, tuple[int, int]] = {}
        try:
            channel = connection.channel()
            for name in wanted:
                try:
                    frame = channel.queue_declare(queue=name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
                    channel = connection.channel()
                    continue
                depths[name] = (frame.method.message_count, frame.method.consumer_count)
        except Exception as exc:
            raise BrokerUnavailable(f"RabbitMQ at {where} did not answer ({_reason(exc)})") from None
        return depths

    return _first_node(url, timeout, read)
