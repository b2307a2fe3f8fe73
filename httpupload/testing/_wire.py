"""The in-memory wire: iosim transports with flow control, and clients on it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump
from twisted.web.client import Agent
from zope.interface import directlyProvides, implementer

from httpupload.testing._http import Answer, MemoryEndpoints, body_producer

T = TypeVar("T")

# A socket's send buffer, as twisted's own transports bound it (bufferSize).
HIGH_WATER = 64 * 1024
# At most this much reaches a protocol in one dataReceived (one socket read).
SEGMENT = 64 * 1024
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 5050)


# -- the wire: iosim transports with flow control ------------------------------


@implementer(IPushProducer)
class FlowTransport(FakeTransport):
    """An iosim transport that can stop reading, pause its writer, and abort.

    ``pauseProducing``: this side stops reading (bytes for it wait on the
    wire).  A streaming producer registered here (the HTTP channel, a body
    producer) is paused while more than ``HIGH_WATER`` bytes written here
    wait for the other side, and resumed once they are taken.
    ``abortConnection`` closes at once, even if the peer is not reading
    (``loseConnection`` waits until it has read everything).
    """

    reading = True
    aborted = False
    producer_paused = False
    # Why the connection was lost: ConnectionDone, or ConnectionAborted.
    lost: Failure | None = None

    @property
    def connected(self) -> bool:
        return not self.disconnected

    def pending(self) -> int:
        """Bytes written here that the other side has not read yet."""
        return sum(len(chunk) for chunk in self.stream)

    def take(self, limit: int) -> bytes:
        data = b"".join(self.stream)
        self.stream = [data[limit:]] if len(data) > limit else []
        return data[:limit]

    def write(self, data: bytes) -> None:
        super().write(data)
        self._throttle()

    def _throttle(self) -> None:
        if self.producer is None or not self.streamingProducer:
            return
        if not self.producer_paused and self.pending() > HIGH_WATER:
            self.producer_paused = True
            self.producer.pauseProducing()
        elif self.producer_paused and self.pending() <= HIGH_WATER // 2:
            self.producer_paused = False
            self.producer.resumeProducing()

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def abortConnection(self) -> None:
        # What is written so far still reaches a peer that reads (it is on
        # the wire); a peer that does not read never gets it.
        self.aborted = True
        self.disconnecting = True


class Pump(IOPump):
    """An ``IOPump`` that honours ``FlowTransport`` flow control and aborts."""

    clientIO: FlowTransport
    serverIO: FlowTransport

    def pump(self, debug: bool = False, advanceClock: bool = True) -> bool:
        if advanceClock:
            self.clock.advance(0)
        moved = False
        for src, dst in (
            (self.clientIO, self.serverIO),
            (self.serverIO, self.clientIO),
        ):
            if src.stream and dst.reading and not dst.disconnecting:
                dst.bufferReceived(src.take(SEGMENT))
                moved = True
            src._throttle()
        if moved:
            return True
        for side, other in (
            (self.serverIO, self.clientIO),
            (self.clientIO, self.serverIO),
        ):
            if side.disconnecting and not side.disconnected:
                if side.stream and not side.aborted:
                    continue  # a clean close waits until its bytes are read
                self._disconnect(side, other)
                return True
        return False

    @staticmethod
    def _disconnect(side: FlowTransport, other: FlowTransport) -> None:
        """Close both ends: an abort is ConnectionAborted here, ConnectionLost there."""
        here: Exception = ConnectionAborted() if side.aborted else ConnectionDone()
        there: Exception = ConnectionLost() if side.aborted else ConnectionDone()
        for io, error in ((side, here), (other, there)):
            io.disconnecting = io.disconnected = True
            io.stream = []
            io.lost = Failure(error)
        assert other.lost is not None and side.lost is not None
        other.protocol.connectionLost(other.lost)
        side.protocol.connectionLost(side.lost)

    @property
    def closed(self) -> bool:
        return bool(self.clientIO.disconnected)


def settle(clock: MemoryReactorClock, pumps: Iterable[Pump]) -> None:
    """Deliver bytes and run what is due now, until nothing is left to do."""
    pumps = list(pumps)
    for _ in range(100_000):
        moved = False
        for pump in pumps:
            moved = pump.pump() or moved
        now = clock.seconds()
        if not moved and not any(c.getTime() <= now for c in clock.getDelayedCalls()):
            return
    raise AssertionError("the exchange never settled")


# -- raw bytes -------------------------------------------------------------------


class RawClient(Protocol):
    """Keeps every byte the server sends, and whether the connection closed."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        self.reason = reason


@dataclass
class Connection:
    """One in-memory connection to the site, seen from the client side."""

    harness: Wire
    pump: Pump
    client: IProtocol

    @property
    def transport(self) -> FlowTransport:
        """The client's transport: ``write`` sends, ``pauseProducing`` stops reading."""
        return self.pump.clientIO

    @property
    def server(self) -> Any:
        """The site's channel for this connection."""
        return self.pump.server

    def write(self, data: bytes) -> Connection:
        """Send bytes and let the exchange settle."""
        self.transport.write(data)
        self.harness.flush()
        return self

    def pause_reading(self) -> None:
        """The client stops reading: what the server writes waits on the wire."""
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()
        self.harness.flush()

    def close(self) -> None:
        """Close the client's side cleanly (bytes already written still arrive)."""
        self.transport.loseConnection()
        self.harness.flush()

    def abort(self) -> None:
        """Drop the connection, as a client that goes away mid-request does."""
        self.transport.abortConnection()
        self.harness.flush()

    @property
    def closed(self) -> bool:
        return self.pump.closed

    @property
    def received(self) -> bytes:
        """The raw bytes received (raw connections only)."""
        assert isinstance(self.client, RawClient)
        return self.client.data

    @property
    def status(self) -> int:
        """The status of the first response received (0: none)."""
        return status_of(self.received)

    @property
    def head(self) -> bytes:
        return self.received.split(b"\r\n\r\n", 1)[0]

    @property
    def body(self) -> bytes:
        _, sep, rest = self.received.partition(b"\r\n\r\n")
        return rest if sep else b""


def status_of(data: bytes) -> int:
    """The status code at the start of raw response bytes (0: none)."""
    if not data.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
        return 0
    return int(data.split(b" ", 2)[1])


def result_of(d: Deferred[T]) -> T:
    """The result of a Deferred that has fired (its failure raised)."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    found = results[0]
    if isinstance(found, Failure):
        found.raiseException()
    return found


def connect_pair(
    client: IProtocol,
    server: IProtocol,
    clock: MemoryReactorClock,
    *,
    peer: IPv4Address = PEER,
    tls: bool = False,
) -> Pump:
    """Connect ``client`` (at ``peer``) to ``server`` (at ``HOST``) over flow-
    controlled in-memory transports; the ``Pump`` moves the bytes."""
    server_io = FlowTransport(server, isServer=True, hostAddress=HOST, peerAddress=peer)
    client_io = FlowTransport(
        client, isServer=False, hostAddress=peer, peerAddress=HOST
    )
    if tls:
        directlyProvides(server_io, ISSLTransport)
        directlyProvides(client_io, ISSLTransport)
    server.makeConnection(server_io)
    client.makeConnection(client_io)
    return Pump(client, server, client_io, server_io, False, clock=clock)


class Wire:
    """Any server factory (a ``Site``) on a clock, and clients to talk to it.

    ``connect`` opens a connection, ``send`` writes raw bytes on a new one,
    ``request`` goes through treq; ``flush`` delivers what can move and runs
    what is due, ``advance`` lets time pass.  URLs starting with ``/`` are
    taken relative to ``base``; an ``https`` URL gets a transport that says
    it is TLS (``ISSLTransport``), as treq's own testing does.
    """

    host: IPv4Address = HOST

    def __init__(
        self,
        factory: IProtocolFactory,
        clock: MemoryReactorClock,
        *,
        base: str = "http://127.0.0.1/",
        peer: IPv4Address = PEER,
    ) -> None:
        self.factory = factory
        self.clock = clock
        self.base = base
        self.peer = peer
        self.pumps: list[Pump] = []

    # -- connections

    def connect(
        self,
        client: IProtocol | None = None,
        *,
        peer: IPv4Address | None = None,
        tls: bool = False,
    ) -> Connection:
        """A new connection from ``client`` (a ``RawClient`` by default) to the site."""
        client = client if client is not None else RawClient()
        peer = peer or self.peer
        server = self.factory.buildProtocol(peer)
        assert server is not None
        pump = connect_pair(client, server, self.clock, peer=peer, tls=tls)
        self.pumps.append(pump)
        return Connection(self, pump, client)

    def send(
        self, payload: bytes, *, close: bool = False, peer: IPv4Address | None = None
    ) -> Connection:
        """Raw bytes on a new connection; the exchange settles before it returns."""
        conn = self.connect(peer=peer)
        conn.write(payload)
        if close:
            conn.close()
        return conn

    def flush(self) -> None:
        """Deliver every byte that can move and run every call due now."""
        settle(self.clock, self.pumps)
        self.pumps = [p for p in self.pumps if not p.closed]

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the clock, then settle."""
        self.clock.advance(seconds)
        self.flush()

    # -- HTTP requests through twisted.web's Agent and treq

    def start_request(self, method: str, url: str, **kwargs: Any) -> Deferred[Answer]:
        """A request through treq on the in-memory wire; settle with ``flush``."""
        from treq.client import HTTPClient

        agent = Agent.usingEndpointFactory(self.clock, MemoryEndpoints(self))
        client = HTTPClient(agent, data_to_body_producer=body_producer)
        if url.startswith("/"):
            url = self.base.rstrip("/") + url

        async def answer() -> Answer:
            response = await client.request(
                method,
                url,
                reactor=cast(Any, self.clock),
                **kwargs,
            )
            body = await response.content()
            return Answer(response.code, response.headers, body, response.length)

        d = ensureDeferred(answer())
        self.flush()
        return d

    def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        """A whole request and its answer (the exchange settles first)."""
        d = self.start_request(method, url, **kwargs)
        self.flush()
        return result_of(d)

    @staticmethod
    def failure_of(d: Deferred[Any]) -> Failure:
        """The failure of a request that fired with one."""
        results: list[Any] = []
        d.addBoth(results.append)
        assert results and isinstance(results[0], Failure), results
        return results[0]

    # -- the site's life, as a listening port gives it

    def start(self) -> None:
        """Start the site (its access log), as a listening port does."""
        self.factory.doStart()

    def stop(self) -> None:
        self.factory.doStop()
