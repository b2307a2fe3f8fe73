"""The client address a request counts against, seen through trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twisted.web.server import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks; raises ValueError on anything else."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


# The longest textual IP address (IPv6 with an embedded IPv4) is 45 characters.
_MAX_ADDRESS = 45


def canonical_address(text: str) -> str | None:
    """An IP address in its one canonical form, None if ``text`` is not one.

    Zone ids (``fe80::1%eth0``) are refused: they are free text, so a client
    could put anything in them (terminal escapes into the log, or a new
    address for each upload to dodge the per-address bound).  IPv4-mapped
    IPv6 addresses count as the IPv4 address they map.
    """
    if len(text) > _MAX_ADDRESS or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _in(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(request: Request, trusted: tuple[Network, ...] = ()) -> str:
    """The peer's address, or the first untrusted hop of X-Forwarded-For.

    Only a peer in ``trusted`` may speak for others; hops are read from the
    right, skipping trusted proxies, so a client cannot forge its own entry.
    A hop that is not a plain IP address counts as no answer: the peer is used.
    """
    host = getattr(request.getClientAddress(), "host", None) or "unknown"
    if not trusted or not _in(host, trusted):
        return host
    hops: list[str] = []
    for value in request.requestHeaders.getRawHeaders(b"X-Forwarded-For") or []:
        hops.extend(h.strip() for h in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        address = canonical_address(hop)
        if address is None:
            return host
        if not _in(address, trusted):
            return address
    return host


def via_proxy(request: Request, trusted: tuple[Network, ...] = ()) -> bool:
    """Whether the peer is one of the trusted proxies (not the client itself)."""
    host = getattr(request.getClientAddress(), "host", None) or "unknown"
    return bool(trusted) and _in(host, trusted)


def is_secure(request: Request, trusted: tuple[Network, ...] = ()) -> bool:
    """Whether the client reached us over TLS: directly, or says a trusted proxy."""
    if request.isSecure():
        return True
    host = getattr(request.getClientAddress(), "host", None) or ""
    if not trusted or not _in(host, trusted):
        return False
    proto = request.requestHeaders.getRawHeaders(b"X-Forwarded-Proto") or []
    return bool(proto) and proto[-1].split(b",")[-1].strip().lower() == b"https"
