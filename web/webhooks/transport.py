"""The HTTP client of webhook deliveries: connects only to addresses the target policy approved.

Checking a host and then letting the client resolve it again leaves a gap: a DNS answer with a
short TTL can name a public address for the check and 127.0.0.1 for the connection (DNS
rebinding). Here the check is inside the connection itself: `_PinnedConnection._new_conn`
resolves the host once, checks every address it got, and opens the socket to those very
addresses (in the resolver's order, as urllib3 would), never resolving again. Everything else
stays urllib3's: the `Host` header, TLS SNI and certificate verification use the URL's host name.
Proxies from the environment are ignored (`trust_env = False`): a proxy would make the connection
for us, to wherever it resolves the name."""
from __future__ import annotations

import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from . import targets


class _PinnedConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        try:
            addresses = targets.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        targets.check_addresses(self.host, addresses)  # raises TargetRefused
        error: OSError | None = None
        for address in addresses:
            try:
                return connection.create_connection(
                    (str(address), self.port), self.timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except socket.timeout as exc:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})") from exc
            except OSError as exc:
                error = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class _PinnedHTTPSConnection(_PinnedConnection, HTTPSConnection):
    pass


class _PinnedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _PinnedConnection


class _PinnedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to the addresses checked for them."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PinnedHTTPConnectionPool,
                                                   "https": _PinnedHTTPSConnectionPool}


def session() -> requests.Session:
    """A session for one delivery: pinned connections, no proxies or .netrc from the environment."""
    s = requests.Session()
    s.trust_env = False
    adapter = PinnedAdapter(max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
