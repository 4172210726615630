"""Where a webhook may be sent: the target policy, applied when a subscription is made and again
at every connection (see `transport.PinnedAdapter`).

A subscriber chooses the URL, so without a policy a webhook is a request our worker makes on an
outsider's behalf to any address it can reach: the cloud metadata service (169.254.169.254), the
database, RabbitMQ's management UI, anything on loopback. The policy refuses every address that is
not globally routable (loopback, private, link-local, multicast, reserved, unspecified, shared
address space, documentation and translation ranges, IPv4 inside IPv6), however the host is
written: the host is resolved the way the HTTP client resolves it (`getaddrinfo`, which also reads
`0x7f000001`, `2130706433`, `0177.0.0.1` and `127.1` as 127.0.0.1), and the addresses it resolves
to are what is judged, not its spelling. `PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS` turns the address
rule off, for development and tests whose receivers run on this machine; userinfo is refused always.

URLs are parsed with urllib3's `parse_url`, the parser `requests` itself uses, so what is checked
is what the client will connect to."""
from __future__ import annotations

import ipaddress
import socket
from typing import Union
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from pipeline import conf

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Not globally reachable, or reaching private networks through a gateway, though `ipaddress`
# does not flag all of them on every Python version.
_SPECIAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",          # "this network"
    "100.64.0.0/10",      # shared address space (carrier-grade NAT): can reach internal workloads
    "192.0.0.0/24",       # IETF protocol assignments
    "192.88.99.0/24",     # 6to4 relay anycast
    "198.18.0.0/15",      # benchmarking
    "64:ff9b::/96",       # NAT64: IPv4 addresses inside IPv6, translated by a gateway
    "64:ff9b:1::/48",     # local-use NAT64
    "2002::/16",          # 6to4: IPv4 addresses inside IPv6
    "2001::/32",          # Teredo
    "5f00::/16",          # segment routing
    "fec0::/10",          # site-local (deprecated, still routed inside some networks)
))


class TargetRefused(Exception):
    """Raised when a webhook URL, or the address its host resolves to, is outside the policy.
    The message names the host and the kind of address: it is for the subscriber when the
    subscription is made and for the worker's log line at delivery."""


def allow_private_targets() -> bool:
    return bool(conf.get("PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS"))


def address_problem(address: IPAddress) -> str | None:
    """Why `address` may not be a webhook target (e.g. "a loopback address"), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for flag, kind in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    ):
        if getattr(address, flag):
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if any(address in network for network in _SPECIAL_NETWORKS if network.version == address.version):
        return "a special-purpose address"
    if not address.is_global:
        return "an address that is not globally routable"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order (raises socket.gaierror)."""
    infos = socket.getaddrinfo(host.strip("[]"), port, allowed_gai_family(), socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_addresses(host: str, addresses: list[IPAddress]) -> None:
    """Raises TargetRefused if any of `addresses` (those of `host`) is outside the policy."""
    if allow_private_targets():
        return
    for address in addresses:
        problem = address_problem(address)
        if problem:
            shown = "" if host.strip("[]") == str(address) else f" ({address})"
            raise TargetRefused(
                f"{host}{shown} is {problem}: webhooks are sent to public addresses only "
                f"(PIPELINE_WEBHOOK_ALLOW_PRIVATE_TARGETS allows others, for development)"
            )


def url_problem(url: object, *, resolve_host: bool = True) -> str | None:
    """What is wrong with a webhook URL, or None; with `resolve_host`, its host is resolved and
    every address it has now is checked (a host that does not resolve yet is left to delivery)."""
    if not isinstance(url, str) or not url:
        return "url is required: an http:// or https:// URL"
    if len(url) > 2000:
        return "url is longer than 2000 characters"
    if any(ord(c) < 33 or c == "\\" for c in url):
        return "url must not contain spaces, control characters or backslashes"
    try:
        parts = parse_url(url)
        netloc = urlsplit(url).netloc
    except (LocationParseError, ValueError):
        return f"url {url!r} is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return f"url must be an http:// or https:// URL, not {parts.scheme + ':' if parts.scheme else repr(url)}"
    if not parts.host:
        return f"url {url!r} has no host"
    if parts.auth is not None or "@" in netloc:  # either parser seeing userinfo is enough
        return "url must not contain a user name or password: receivers verify X-Pipeline-Signature instead"
    if not resolve_host:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(parts.host, port)
    except (OSError, UnicodeError, ValueError):
        return None  # not resolvable now: the check at delivery decides
    try:
        check_addresses(parts.host, addresses)
    except TargetRefused as exc:
        return f"url {exc}"
    return None


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, for log lines: a webhook URL's path often is a secret."""
    try:
        parts = parse_url(url)
    except LocationParseError:
        return "(an invalid URL)"
    host = f"[{parts.host}]" if parts.host and ":" in parts.host else parts.host or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def without_userinfo(url: str) -> str:
    """The URL as it may be shown and logged: a user name or password in it replaced by `***`."""
    try:
        parts = parse_url(url)
    except LocationParseError:
        return "(an invalid URL)"
    if parts.auth is None:
        return url
    return parts._replace(auth="***").url
