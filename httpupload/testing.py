"""Test our own ``UploadSite`` in memory: no sockets, no threads, no wall clock.

(Over 400 lines on purpose: one module, so an embedder imports one name for
the wire, the client and the builders, each of which needs the others.)

Public, for the project's tests and for embedders testing their own service.
The site (with its own channel and request classes, so PUT bodies take the
real streaming path) is connected to clients over ``twisted.test.iosim`` on
a ``MemoryReactorClock``, as treq's ``testing.py`` does for a plain ``Site``,
with flow control added: each side may stop reading (``pauseProducing`` on
its transport, which is what the site does while storage is behind, and what
a test does to play a client that stops reading), and a writer whose bytes
pile up past ``HIGH_WATER`` is paused as a real transport pauses it.

A round trip::

    from httpupload.testing import make_harness

    h = make_harness(http={"min_upload_rate": 0})   # any config keys
    slot = h.mint("a.txt", 5)
    assert h.request("PUT", slot.url, data=b"hello", headers=slot.headers).code == 201
    assert h.request("GET", slot.url).body == b"hello"

Step by step (a slow body, a timeout)::

    slot = h.mint("b.txt", 5)
    body = SlowBody(5)
    d = h.start_request("PUT", slot.url, data=body, headers=slot.headers)
    body.write(b"he")
    h.flush()
    h.advance(61)                      # the clock, never a sleep
    failure = h.failure_of(d)          # idle for the idle timeout: cut off

Exact bytes, for the wire format::

    conn = h.send(b"GET /x HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    assert conn.status == 404 and not conn.closed
    conn.pause_reading()               # the server's writes now pile up

``MemoryStorage`` and ``MemoryMetadataStore`` honour the storage and metadata
protocols with every Deferred already fired: ``make_harness(metadata=
MemoryMetadataStore())`` serves files by their records, as the service does
(without one the site serves what storage holds, as some embeddings run it).
``make_config`` builds a checked, frozen ``Config`` from a few overrides
(parsed by ``httpupload.config``, so defaults stay in one place), ``make_site``
builds the ``UploadSite`` as the service does, and ``stored_file`` puts a file
into a storage (and a metadata store) as a finished upload would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import directlyProvides, implementer

from httpupload.config import Config, parse_config
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.metrics import Metrics
from httpupload.slots import Slot, SlotSigner, new_file_id, url_path
from httpupload.storage import FileInfo, Storage
from httpupload.storage.memory import MemoryStorage
from httpupload.web.settings import WebSettings
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

T = TypeVar("T")

START = 1_700_000_000.0
OWNER = "romeo@montague.tld"
TEST_KEY = b"k" * 32
# A socket's send buffer, as twisted's own transports bound it (bufferSize).
HIGH_WATER = 64 * 1024
# At most this much reaches a protocol in one dataReceived (one socket read).
SEGMENT = 64 * 1024
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 5050)

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "component": {"jid": "upload.example", "secret": "s3cret"},
    "http": {"public_url": "https://upload.example/", "signing_key": TEST_KEY.decode()},
    "storage": {"path": "/nonexistent/httpupload"},
}


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


# -- an HTTP client over the same wire ----------------------------------------------


@implementer(IBodyProducer)
class SlowBody:
    """A request body the test writes piece by piece; ``paused`` shows backpressure."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.consumer: Any = None
        self.paused = False
        self.stopped = False
        self._done: Deferred[None] = Deferred()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        return self._done

    def write(self, data: bytes) -> None:
        assert self.consumer is not None, "the request has not started yet"
        self.consumer.write(data)

    def finish(self) -> None:
        """All bytes are written (the client library then reads the answer)."""
        if not self._done.called:
            self._done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class WholeBody(SlowBody):
    """A body written whole as soon as the request starts."""

    def __init__(self, data: bytes) -> None:
        super().__init__(len(data))
        self.data = data

    def startProducing(self, consumer: Any) -> Deferred[None]:
        done = super().startProducing(consumer)
        self.write(self.data)
        self.finish()
        return done


def _body_producer(data: Any) -> IBodyProducer:
    if IBodyProducer.providedBy(data):
        return data
    return WholeBody(data if isinstance(data, bytes) else str(data).encode("utf-8"))


@implementer(IAgentEndpointFactory)
@dataclass
class _Endpoints:
    harness: Wire

    def endpointForURI(self, uri: URI) -> _Endpoint:
        return _Endpoint(self.harness, uri.scheme == b"https")


@dataclass
class _Endpoint:
    harness: Wire
    tls: bool

    def connect(self, factory: Factory) -> Deferred[IProtocol]:
        protocol: IProtocol | None = factory.buildProtocol(HOST)
        assert protocol is not None
        self.harness.connect(protocol, tls=self.tls)
        return succeed(protocol)


@dataclass
class Answer:
    """A response as the client got it: status, headers, whole body."""

    code: int
    headers: Headers
    body: bytes
    length: int | None

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


@dataclass
class Minted:
    """A slot, its token, and what a client PUTs with."""

    slot: Slot
    token: str
    url: str

    @property
    def path(self) -> str:
        return "/" + self.slot.path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# -- building the site -----------------------------------------------------------


def make_config(**sections: Mapping[str, Any]) -> Config:
    """A checked ``Config``: a minimal valid file with ``sections`` merged in.

    ``make_config(http={"idle_timeout": 5}, limits={"max_file_size": 10})``.
    Parsed by ``httpupload.config`` itself, so every default is the real one.
    """
    data: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE_CONFIG.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, Path("/nonexistent"))


def make_receiver(
    config: Config,
    storage: Storage,
    clock: MemoryReactorClock,
    signer: SlotSigner,
    *,
    metadata: MetadataStore | None = None,
) -> UploadReceiver:
    """The ``UploadReceiver`` (where PUTs are judged) the service builds."""
    return UploadReceiver(
        signer,
        storage,
        clock,
        max_uploads_per_address=config.http.max_uploads_per_address,
        metadata=metadata,
    )


def make_site(
    config: Config,
    storage: Storage,
    clock: MemoryReactorClock,
    *,
    metadata: MetadataStore | None = None,
    metrics: Metrics | None = None,
    receiver: UploadReceiver | None = None,
) -> UploadSite:
    """The ``UploadSite`` the service builds from ``config``, on ``clock``."""
    h = config.http
    if receiver is None:
        assert h.signing_keys is not None, "make_config gives a signing key"
        signer = SlotSigner(h.signing_keys, clock)
        receiver = make_receiver(config, storage, clock, signer, metadata=metadata)
    return UploadSite(
        receiver,
        storage,
        clock,
        settings=WebSettings.from_config(h),
        metadata=metadata,
        metrics=metrics,
    )


async def _store(
    storage: Storage,
    metadata: MetadataStore | None,
    info: FileInfo,
    data: bytes,
    record: FileRecord,
) -> FileInfo:
    pending = storage.begin_write(info.file_id)
    written = pending.write(data)
    if written is not None:
        await written
    if metadata is not None:
        await metadata.reserve(record, 86400, lambda usage: None)
    await pending.commit(info)
    if metadata is not None:
        await metadata.complete(
            info.file_id, info.sha256, info.content_type, info.created
        )
    return info


def stored_file(
    storage: Storage,
    metadata: MetadataStore | None = None,
    data: bytes = b"hello",
    name: str = "file.bin",
    content_type: str = "application/octet-stream",
    *,
    created: float = START - 10,
    owner: str = OWNER,
    purpose: str = "message",
    expires: float | None = None,
    file_id: str | None = None,
    **info: Any,
) -> Deferred[FileInfo]:
    """Store ``data`` (and its complete record) as a finished upload would.

    ``info`` overrides fields of the stored ``FileInfo`` (a recorded size
    other than the bytes', say).  Fires at once on memory stores.
    """
    file_id = file_id or new_file_id()
    stored = FileInfo(
        **{
            "file_id": file_id,
            "filename": name,
            "size": len(data),
            "content_type": content_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": created,
            **info,
        }
    )
    record = FileRecord(
        file_id=file_id,
        owner=owner,
        filename=name,
        size=stored.size,
        content_type=content_type,
        purpose=purpose,
        created=created,
        slot_expires=created + 300,
        expires=expires,
    )
    return ensureDeferred(_store(storage, metadata, stored, data, record))


def result_of(d: Deferred[T]) -> T:
    """The result of a Deferred that has fired (its failure raised)."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    found = results[0]
    if isinstance(found, Failure):
        found.raiseException()
    return found


class Wire:
    """Any server factory (a ``Site``) on a clock, and clients to talk to it.

    ``connect`` opens a connection, ``send`` writes raw bytes on a new one,
    ``request`` goes through treq; ``flush`` delivers what can move and runs
    what is due, ``advance`` lets time pass.  URLs starting with ``/`` are
    taken relative to ``base``; an ``https`` URL gets a transport that says
    it is TLS (``ISSLTransport``), as treq's own testing does.
    """

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
        server_io = FlowTransport(
            server, isServer=True, hostAddress=HOST, peerAddress=peer
        )
        client_io = FlowTransport(
            client, isServer=False, hostAddress=peer, peerAddress=HOST
        )
        if tls:
            directlyProvides(server_io, ISSLTransport)
            directlyProvides(client_io, ISSLTransport)
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        pump = Pump(client, server, client_io, server_io, False, clock=self.clock)
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

        agent = Agent.usingEndpointFactory(self.clock, _Endpoints(self))
        client = HTTPClient(agent, data_to_body_producer=_body_producer)
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


class Harness(Wire):
    """An ``UploadSite`` on a ``MemoryReactorClock``, its stores, and clients.

    Made by ``make_harness``; ``storage`` is a ``MemoryStorage`` unless
    another was given, ``clock`` the reactor of everything.
    """

    def __init__(
        self,
        config: Config,
        clock: MemoryReactorClock,
        storage: Any,
        metadata: MetadataStore | None,
        metrics: Metrics,
        signer: SlotSigner,
        receiver: UploadReceiver,
        site: UploadSite,
    ) -> None:
        super().__init__(site, clock, base=config.http.public_url)
        self.config = config
        self.storage = storage
        self.metadata = metadata
        self.metrics = metrics
        self.signer = signer
        self.receiver = receiver
        self.site = site

    def mint(
        self,
        name: str = "a.txt",
        size: int = 5,
        content_type: str | None = None,
        *,
        owner: str = OWNER,
        lifetime: int = 300,
    ) -> Minted:
        """A new slot for ``name`` of ``size`` bytes, signed as a grant signs it.

        Only the token: no record is made (see ``grant``).
        """
        slot, token = self.signer.mint(name, size, content_type, owner, lifetime)
        return Minted(slot, token, self.base + slot.path)

    def grant(
        self,
        name: str = "a.txt",
        size: int = 5,
        content_type: str | None = None,
        *,
        owner: str = OWNER,
        lifetime: int = 300,
        expires: float | None = None,
    ) -> Minted:
        """A slot as ``SlotGranter`` grants it: minted, and its record reserved.

        No quota is checked; ``expires`` is when the stored file stops being
        served (None: never).  Needs a metadata store.
        """
        assert self.metadata is not None, "grant() reserves a record: no store"
        minted = self.mint(name, size, content_type, owner=owner, lifetime=lifetime)
        record = FileRecord(
            file_id=minted.slot.file_id,
            owner=owner,
            filename=name,
            size=size,
            content_type=content_type,
            purpose="message",
            created=self.clock.seconds(),
            slot_expires=minted.slot.expires,
            expires=expires,
        )
        result_of(self.metadata.reserve(record, 86400, lambda usage: None))
        return minted

    def store(
        self, data: bytes = b"hello", name: str = "file.bin", **kw: Any
    ) -> tuple[FileInfo, str]:
        """``stored_file`` into this site's stores: its info and GET path."""
        info = result_of(stored_file(self.storage, self.metadata, data, name, **kw))
        return info, "/" + url_path(info.file_id, name)

    def upload(
        self, data: bytes, name: str = "a.bin", content_type: str | None = None
    ) -> str:
        """PUT ``data`` through a fresh slot (it must be stored); its URL."""
        slot = self.mint(name, len(data), content_type)
        answer = self.request("PUT", slot.url, data=data, headers=slot.headers)
        assert answer.code == 201, answer
        return slot.url


def make_harness(
    config: Config | None = None,
    *,
    storage: Storage | None = None,
    metadata: MetadataStore | None = None,
    metrics: Metrics | None = None,
    clock: MemoryReactorClock | None = None,
    **sections: Mapping[str, Any],
) -> Harness:
    """An ``UploadSite`` built as the service builds it, on memory stores.

    ``sections`` go to ``make_config`` when no ``config`` is given.  Without
    a ``metadata`` store the site serves what storage holds (an embedding).
    The clock starts at ``START``.
    """
    if clock is None:
        clock = MemoryReactorClock()
        clock.advance(START)
    config = config or make_config(**sections)
    storage = storage if storage is not None else MemoryStorage()
    metrics = metrics or Metrics()
    assert config.http.signing_keys is not None, "make_config gives a signing key"
    signer = SlotSigner(config.http.signing_keys, clock)
    receiver = make_receiver(config, storage, clock, signer, metadata=metadata)
    site = make_site(
        config, storage, clock, metadata=metadata, metrics=metrics, receiver=receiver
    )
    return Harness(config, clock, storage, metadata, metrics, signer, receiver, site)


__all__ = [
    "OWNER",
    "START",
    "TEST_KEY",
    "Answer",
    "Connection",
    "FlowTransport",
    "Harness",
    "MemoryMetadataStore",
    "MemoryStorage",
    "Minted",
    "Pump",
    "RawClient",
    "SlowBody",
    "WholeBody",
    "Wire",
    "make_config",
    "make_harness",
    "make_receiver",
    "make_site",
    "result_of",
    "status_of",
    "stored_file",
]
