"""Pins what downloads touch of Twisted's undocumented state (``_twisted_private``).

``storage.sending`` reaches a storage ``Sink``'s twisted.web connection
(``Request.channel``: its transport, clock and site's idle timeout) and,
for ``sendfile``, the buffer of Twisted's TCP transport.  A Twisted release
that changes any of them fails here first, with a name.  No TCP socket: a
``tcp.Server`` (an accepted connection) is built over a Unix socket pair,
the channel over a ``StringTransport``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from httpupload import _twisted_private as private


class Holds(Resource):
    """Keeps every request unanswered, for the test to look at."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render_GET(self, request: Request) -> int:
        self.requests.append(request)
        return NOT_DONE_YET


def _request_on(site: Site, resource: Holds) -> tuple[Request, StringTransport]:
    """A GET on a fresh connection of ``site``, held open."""
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    return resource.requests[-1], transport


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of Unix stream sockets, closed after the test."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_a_requests_connection_is_its_channels_transport_until_it_goes() -> None:
    """``connection_of`` is ``Request.channel``'s transport, None once it is lost."""
    resource = Holds()
    request, transport = _request_on(Site(resource), resource)
    assert private.connection_of(request) is transport
    request.channel.connectionLost(Failure(ConnectionError("gone")))
    assert request.channel is None
    assert private.connection_of(request) is None


def test_the_watchdog_runs_on_the_sites_clock_and_idle_timeout() -> None:
    """``watchdog_clock`` is the site reactor's ``callLater`` and ``Site.timeOut``."""
    clock = MemoryReactorClock()
    resource = Holds()
    request, _ = _request_on(Site(resource, timeout=7, reactor=clock), resource)
    found = private.watchdog_clock(request)
    assert found is not None
    call_later, timeout = found
    assert timeout == 7.0
    fired: list[bool] = []
    call_later(timeout, lambda: fired.append(True))
    clock.advance(7)
    assert fired == [True]


def test_a_site_without_an_idle_timeout_has_no_watchdog() -> None:
    """A site whose timeout is off (None), or a sink with no channel, gets None."""
    resource = Holds()
    request, _ = _request_on(Site(resource, timeout=None), resource)
    assert private.watchdog_clock(request) is None
    assert private.watchdog_clock(object()) is None


def test_only_a_tcp_connection_is_a_plain_tcp_transport() -> None:
    """A channel over anything but a ``tcp.Connection`` has no plain TCP transport."""
    resource = Holds()
    request, _ = _request_on(Site(resource), resource)
    assert private.plain_tcp_transport(request) is None


def test_the_tcp_buffer_is_empty_once_the_transport_has_written_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """``dataBuffer``, ``offset`` and ``_tempDataLen`` say if the head is queued."""
    ours, theirs = pair
    ours.setblocking(False)
    reactor = MemoryReactorClock()
    # What a listening port makes of an accepted connection (no port here).
    connection = tcp.Server(ours, Protocol(), ("127.0.0.1", 4321), None, 1, reactor)  # type: ignore[arg-type]

    class Sink:
        """A sink whose channel's transport is the TCP connection."""

        class channel:  # noqa: N801 (Request.channel's name)
            transport = connection

    assert private.plain_tcp_transport(Sink()) is connection
    assert private.transport_reactor(connection) is reactor
    assert private.head_flushed(connection)
    connection.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert not private.head_flushed(connection)
    assert connection in reactor.getWriters()
    connection.doWrite()
    assert private.head_flushed(connection)
    assert theirs.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"
