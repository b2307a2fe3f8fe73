"""The metrics listener's Site holds to the same wire rules as the upload site."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, connect

from httpupload.metrics import Metrics, MetricsResource
from httpupload.web.site import MetricsSite

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Client(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True


def _site(reactor: MemoryReactorClock) -> MetricsSite:
    return MetricsSite(
        MetricsResource(Metrics(), lambda: {"status": "ok"}), reactor, idle_timeout=60
    )


def _send(site: MetricsSite, payload: bytes) -> tuple[Client, object]:
    server = site.buildProtocol(PEER)
    client = Client()
    server_io = FakeTransport(server, isServer=True, peerAddress=PEER)
    client_io = FakeTransport(client, isServer=False)
    pump = connect(server, server_io, client, client_io, greet=False)
    client_io.write(payload)
    pump.flush()
    return client, pump


def test_metrics_answers_without_a_server_header() -> None:
    """/metrics is served, with no Server header naming Twisted or its version."""
    client, _ = _send(
        _site(MemoryReactorClock()),
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    head, _, body = client.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nserver:" not in head.lower()
    assert b"httpupload_slots" in body


def test_a_large_body_sent_to_metrics_is_not_kept() -> None:
    """A POST announcing 100 MiB is answered at once and closed, not spooled."""
    client, _ = _send(
        _site(MemoryReactorClock()),
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 104857600\r\n\r\n" + b"x" * 65536,
    )
    assert client.data.startswith(b"HTTP/1.1 ")
    assert client.closed


def test_an_idle_metrics_connection_is_closed() -> None:
    """A connection that sends nothing is closed after the idle timeout, not 12 h."""
    reactor = MemoryReactorClock()
    client, pump = _send(_site(reactor), b"")
    reactor.advance(61)
    pump.flush()  # type: ignore[attr-defined]
    assert client.closed
