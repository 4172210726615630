"""The HTTP client of webhook deliveries: connects to the address the target policy approved.

Checking a host and then letting the client resolve it again leaves a gap: a DNS answer with a
short TTL can name a public address for the check and 127.0.0.1 for the connection (DNS
rebinding). `PinnedAdapter` closes it the way requests-hardened does: it resolves the host once,
when requests asks for a connection, checks that address, and hands urllib3 the address itself as
the host to connect to, while the request keeps the original name in its `Host` header, in TLS
SNI (`server_hostname`) and in certificate verification (`assert_hostname`). Proxies from the
environment are ignored (`trust_env = False`): a proxy would make the connection for us, to
wherever it resolves the name."""
from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from . import targets

_DEFAULT_PORTS = {"http": 80, "https": 443}


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections go to the one address checked for them."""

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host, scheme = host_params["host"], host_params["scheme"]
        port = host_params["port"] or _DEFAULT_PORTS.get(scheme, 80)
        try:
            addresses = targets.resolve(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise requests.ConnectionError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise requests.ConnectionError(f"{host} resolves to no address")
        address = addresses[0]
        targets.check_addresses(host, [address])  # the one connected to, not the others
        request.headers = CaseInsensitiveDict(request.headers or {})
        shown = f"[{host}]" if ":" in host else host
        request.headers["Host"] = shown if host_params["port"] is None else f"{shown}:{port}"
        if scheme == "https":
            pool_kwargs["server_hostname"] = host
            pool_kwargs["assert_hostname"] = host
        host_params["host"] = str(address) if address.version == 4 else f"[{address}]"
        return host_params, pool_kwargs


def session() -> requests.Session:
    """A session for one delivery: pinned connections, no proxies or .netrc from the environment."""
    s = requests.Session()
    s.trust_env = False
    adapter = PinnedAdapter(max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
