"""The client address a request counts against, seen through trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twisted.web.server import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks; raises ValueError on anything else."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


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
    """
    host = getattr(request.getClientAddress(), "host", None) or "unknown"
    if not trusted or not _in(host, trusted):
        return host
    hops: list[str] = []
    for value in request.requestHeaders.getRawHeaders(b"X-Forwarded-For") or []:
        hops.extend(h.strip() for h in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return host
        if not _in(hop, trusted):
            return hop
    return host


def is_secure(request: Request, trusted: tuple[Network, ...] = ()) -> bool:
    """Whether the client reached us over TLS: directly, or says a trusted proxy."""
    if request.isSecure():
        return True
    host = getattr(request.getClientAddress(), "host", None) or ""
    if not trusted or not _in(host, trusted):
        return False
    proto = request.requestHeaders.getRawHeaders(b"X-Forwarded-Proto") or []
    return bool(proto) and proto[-1].split(b",")[-1].strip().lower() == b"https"
