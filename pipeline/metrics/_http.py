"""Prometheus's text format as every endpoint of ours serves it, and the small HTTP server the
worker and scheduler endpoints use. Model-free: a worker process starts its endpoint from a
Dramatiq middleware, which django-dramatiq loads before Django's app registry is ready."""
from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ._processor import metric_families, prime
from ._settings import bind_address


class _EveryFamily:
    """What `collector` collects, then the HELP and TYPE of every metric family of ours it did not
    (no sample yet): a scraper sees each family from the first scrape, whatever the process kind."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        seen = set()
        for family in self.collector.collect():
            seen.add(family.name)
            yield family
        for metric in metric_families():
            for family in metric.describe():
                if family.name not in seen:
                    yield family


def render(collector: Any) -> tuple[bytes, str]:
    """`collector`'s metrics in Prometheus's text format, as every endpoint of ours serves them (web,
    worker, scheduler: one format version, prometheus_client's CONTENT_TYPE_LATEST, whatever the
    scraper's Accept header); returns (body, content type)."""
    return generate_latest(_EveryFamily(collector)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a line each
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def start_http_server(port: int, registry: Any) -> Any:
    """Serves `registry` on `port` (any path) from a daemon thread, rendered by `render` like the
    web's /metrics (prometheus_client's own server would answer version 0.0.4 to a plain GET)."""
    prime()

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        body, content_type = render(registry)
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    address = bind_address()
    server_class = type("_Server", (_ThreadingWSGIServer,), {
        "address_family": socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]})
    server = make_server(address, port, app, server_class=server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    return server
