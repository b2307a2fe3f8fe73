"""A download whose client stops reading is cut off; one that reads slowly is not.

twisted.web suspends the idle timeout while a response is written, so every
download path keeps its own write timeout (the site's idle timeout): sendfile
over plain TCP, the chunked sender over TLS, and the relay of an S3 body.
The sockets here are real where the socket is the point (sendfile, TLS: those
tests are marked ``enable_socket`` and listen on 127.0.0.1 port 0); the time
the site keeps is a Clock.  The in-memory counterpart (a memory store's
sender paused, then cut, on the harness's wire) is in tests/test_testing.py.

(Over 400 lines on purpose: one suite for the write timeout of every
download path, on fakes and then over the sockets each path needs.)
"""

from __future__ import annotations

import io
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from test_tls import make_self_signed
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ITransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseDone
from webserver import Server, start_server

from httpupload._reactor import running_reactor
from httpupload.slots import SlotSigner, url_path
from httpupload.storage import sending
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.storage.s3.read import BodyRelay
from httpupload.storage.sending import FileSender, WriteWatchdog
from httpupload.testing import START, stored_file
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

TIMEOUT = 60.0
SIZE = 8 * 1024 * 1024
DATA = os.urandom(SIZE)

# Twisted's ssl: endpoint hands pyOpenSSL objects that pyOpenSSL deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing pyOpenSSL .* objects is deprecated:DeprecationWarning"
)


# -- the watchdog and the senders, on fakes ----------------------------------


def test_the_watchdog_fires_a_whole_timeout_after_the_last_progress() -> None:
    """Progress starts the time again; silence for the timeout fires it once."""
    clock = Clock()
    fired: list[float] = []
    watchdog = WriteWatchdog(
        clock.callLater, 10.0, lambda: fired.append(clock.seconds())
    )
    watchdog.start()
    for _ in range(5):
        clock.advance(9)
        watchdog.progress()
    assert fired == []
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [55.0]
    watchdog.progress()  # after firing: nothing more
    clock.advance(100)
    assert fired == [55.0]
    assert clock.getDelayedCalls() == []


def test_a_stopped_watchdog_never_fires() -> None:
    """A finished download leaves no timer behind."""
    clock = Clock()
    watchdog = WriteWatchdog(clock.callLater, 10.0, lambda: pytest.fail("fired"))
    watchdog.start()
    watchdog.stop()
    clock.advance(100)
    assert clock.getDelayedCalls() == []


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeSite:
    timeOut = TIMEOUT


class FakeChannel:
    def __init__(self, clock: Clock) -> None:
        self.callLater = clock.callLater
        self.site = FakeSite()
        self.transport = FakeTransport()


class FakeRequest:
    """What the senders use of a request, recorded."""

    def __init__(self, clock: Clock) -> None:
        self.channel = FakeChannel(clock)
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = 0
        self.done: Deferred[None] = Deferred()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        return self.done

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished += 1

    def loseConnection(self) -> None:
        raise AssertionError("a stalled download must be aborted, not closed")

    @property
    def aborted(self) -> bool:
        return self.channel.transport.aborted


def test_the_chunked_sender_cuts_off_a_client_that_stops_asking() -> None:
    """No resumeProducing for the idle timeout: the connection is aborted."""
    clock = Clock()
    request = FakeRequest(clock)
    handle = io.BytesIO(DATA)
    sender = FileSender(request, handle, 0, SIZE)  # type: ignore[arg-type]
    sender.start()
    for _ in range(3):
        sender.resumeProducing()
        clock.advance(TIMEOUT - 1)
    assert not request.aborted
    with capturedLogs() as events:
        clock.advance(1)
    assert request.aborted
    assert request.producer is None and request.finished == 0
    assert handle.closed
    lines = [formatEvent(e) for e in events]
    assert len(lines) == 1 and "took no byte for 60 s" in lines[0], lines
    assert f"({3 * sending.CHUNK_SIZE} of {SIZE} bytes sent)" in lines[0]


def test_the_chunked_sender_finishes_a_slow_client_and_leaves_no_timer() -> None:
    """A client that asks for more now and then gets the whole file."""
    clock = Clock()
    request = FakeRequest(clock)
    sender = FileSender(request, io.BytesIO(DATA), 100, SIZE - 100)  # type: ignore[arg-type]
    sender.start()
    while request.producer is not None:
        clock.advance(TIMEOUT - 1)
        sender.resumeProducing()
    assert not request.aborted and request.finished == 1
    assert b"".join(request.written) == DATA[100:]
    assert clock.getDelayedCalls() == []


def test_a_read_error_midway_cuts_the_connection() -> None:
    """A disk error while sending cuts the response; nothing escapes."""

    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    clock = Clock()
    request = FakeRequest(clock)
    handle = Failing(DATA)
    sender = FileSender(request, handle, 0, SIZE)  # type: ignore[arg-type]
    sender.start()
    with capturedLogs() as events:
        sender.resumeProducing()
    assert request.aborted and request.finished == 0 and handle.closed
    assert any(e.get("log_failure") for e in events)
    assert clock.getDelayedCalls() == []


class Source:
    """The S3 response's transport, as the relay sees it."""

    state = "running"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "running"

    def stopProducing(self) -> None:
        self.state = "stopped"


def _relay(clock: Clock, length: int) -> tuple[FakeRequest, BodyRelay, Source]:
    request = FakeRequest(clock)
    relay = BodyRelay(request, length)  # type: ignore[arg-type]
    relay.start()
    source = Source()
    relay.makeConnection(cast(ITransport, source))
    return request, relay, source


def test_the_s3_relay_cuts_off_a_client_that_stops_reading() -> None:
    """Paused by the client and never resumed: client cut off, S3 dropped."""
    clock = Clock()
    request, relay, source = _relay(clock, 1000)
    relay.dataReceived(b"x" * 100)
    relay.pauseProducing()
    clock.advance(TIMEOUT - 1)
    assert not request.aborted
    with capturedLogs() as events:
        clock.advance(1)
    assert request.aborted and request.producer is None and request.finished == 0
    assert source.state == "stopped"
    lines = [formatEvent(e) for e in events]
    assert len(lines) == 1 and "(100 of 1000 bytes sent)" in lines[0], lines
    relay.connectionLost(Failure(ConnectionError("dropped")))
    assert request.finished == 0


def test_the_s3_relay_cuts_off_when_s3_stops_sending() -> None:
    """A body that stops arriving does not hold the client for ever either."""
    clock = Clock()
    request, relay, source = _relay(clock, 1000)
    relay.dataReceived(b"x" * 100)
    clock.advance(TIMEOUT)
    assert request.aborted and source.state == "stopped"


def test_the_s3_relay_keeps_a_slow_client() -> None:
    """Paused and resumed again and again over many timeouts: the whole body."""
    clock = Clock()
    request, relay, _ = _relay(clock, 100)
    for _ in range(10):
        relay.dataReceived(b"y" * 10)
        relay.pauseProducing()
        clock.advance(TIMEOUT - 1)
        relay.resumeProducing()
    relay.connectionLost(Failure(ResponseDone()))
    assert not request.aborted and request.finished == 1
    assert b"".join(request.written) == b"y" * 100
    assert clock.getDelayedCalls() == []


# -- over real sockets ---------------------------------------------------------


async def start_clocked_server(
    tmp_path: Path, endpoint: str = "tcp:0:interface=127.0.0.1", **site_options: Any
) -> Server:
    """A site listening on ``endpoint`` (on the real reactor), timed by a Clock.

    The sockets are real (sendfile and TLS need them), but everything the
    site times (idle timeout, the downloads' write timeout) is driven by the
    test advancing ``server.clock``.
    """
    reactor = running_reactor()
    clock = Clock()
    clock.advance(START)
    storage = FilesystemStorage(tmp_path / "store", reactor, reactor.getThreadPool())
    storage.prepare()
    signer = SlotSigner(b"k" * 32, clock)
    receiver = UploadReceiver(signer, storage, clock)
    site = UploadSite(receiver, storage, clock, **site_options)
    port = await serverFromString(reactor, endpoint).listen(site)
    number = cast(IPv4Address, port.getHost()).port
    scheme = "https" if endpoint.startswith("ssl:") else "http"
    return Server(
        f"{scheme}://127.0.0.1:{number}/",
        number,
        signer,
        clock,
        storage,
        HTTPConnectionPool(reactor, persistent=False),
        receiver,
        site,
        port,
    )


async def store_file(server: Server, data: bytes) -> tuple[object, str]:
    """Store ``data`` straight into the site's storage; its info and GET path."""
    info = await stored_file(server.storage, None, data)
    return info, "/" + url_path(info.file_id, info.filename)


async def _sleep(seconds: float) -> None:
    await deferLater(running_reactor(), seconds, lambda: None)


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait on the real reactor until ``check()`` holds.

    Polling, because what is awaited is the kernel's (a socket buffer full,
    a descriptor released); nothing in the process fires an event for it.
    """
    for _ in range(int(within / 0.01)):
        if check():
            return
        await _sleep(0.01)
    raise AssertionError("the condition never held")


async def _stalled(progress: Callable[[], int]) -> int:
    """Wait until ``progress()`` has stood still for a while; return it.

    The kernel's buffers filling up has no event: polled, as ``_until``.
    """
    last, still = -1, 0
    for _ in range(1000):
        now = progress()
        still = still + 1 if now == last and now > 0 else 0
        if still >= 20:
            return now
        last = now
        await _sleep(0.01)
    raise AssertionError("the download never stalled")


async def _read_slowly(
    sock: socket.socket, server: Server, sender: Any, progress: Callable[[], int]
) -> tuple[bytes, float]:
    """Read a little at a time; after each step the server takes, 0.4 timeouts pass.

    Returns what was read and how much Clock time passed meanwhile.
    """
    sock.setblocking(False)
    got, advanced = b"", 0.0
    while sender.request is not None:
        before = progress()
        while progress() == before and sender.request is not None:
            try:
                got += sock.recv(16 * 1024)
            except (ssl.SSLWantReadError, BlockingIOError):
                await _sleep(0.002)
        server.clock.advance(0.4 * TIMEOUT)
        advanced += 0.4 * TIMEOUT
    sock.setblocking(True)
    return got, advanced


class Started(list[Any]):
    """The senders started, and a Deferred that fires at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.first: Deferred[Any] = Deferred()


def _spy(monkeypatch: pytest.MonkeyPatch, cls: Any) -> Started:
    """Every ``cls`` sender started, its socket's send buffer kept small."""
    started = Started()
    original = cls.start

    def start(self: Any) -> None:
        transport = self.request.channel.transport
        while not isinstance(transport, tcp.Connection):
            transport = transport.transport  # under TLS
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        started.append(self)
        original(self)
        if not started.first.called:
            started.first.callback(self)

    monkeypatch.setattr(cls, "start", start)
    return started


def _client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _drain(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the socket still holds, and whether it ended in a cut."""
    sock.settimeout(5)
    got = b""
    try:
        while chunk := sock.recv(1 << 20):
            got += chunk
    except (ConnectionResetError, ssl.SSLError):
        return got, True
    return got, False


@pytest_twisted.async_yield_fixture
async def tcp_server(tmp_path: Path) -> AsyncIterator[Server]:
    """The site on plain TCP (downloads by sendfile), timed by a Clock."""
    server = await start_clocked_server(tmp_path, idle_timeout=TIMEOUT)
    yield server
    await server.listening.stopListening()


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_sendfile_cuts_off_a_client_that_never_reads(
    tcp_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buffers full, no byte taken for the idle timeout: aborted, all released."""
    started = _spy(monkeypatch, sending.SendfileSender)
    _, path = await store_file(tcp_server, DATA)
    sock = _client(tcp_server.port)
    try:
        sock.sendall(_request(path))
        sender = await started.first
        sent = await _stalled(lambda: sender.offset)
        assert sent < SIZE
        tcp_server.clock.advance(TIMEOUT - 1)
        await _sleep(0.05)
        assert sender.request is not None  # not yet
        with capturedLogs() as events:
            tcp_server.clock.advance(1)
        assert sender.request is None and sender.handle is None and sender._fd == -1
        assert any("took no byte for 60 s" in formatEvent(e) for e in events)
        got, cut = await deferToThread(_drain, sock)
        assert cut or len(got) < SIZE
    finally:
        sock.close()


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_sendfile_keeps_a_slow_reader_that_keeps_reading(
    tcp_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader taking a little every 0.4 timeouts gets every byte, over many."""
    started = _spy(monkeypatch, sending.SendfileSender)
    data = DATA[: 4 * 1024 * 1024]
    _, path = await store_file(tcp_server, data)
    sock = _client(tcp_server.port)
    try:
        sock.sendall(_request(path))
        sender = await started.first
        got, advanced = await _read_slowly(
            sock, tcp_server, sender, lambda: sender.offset
        )
        rest, cut = await deferToThread(_read_until_body, sock, got, len(data))
        assert not cut
        assert rest.endswith(data) and rest.startswith(b"HTTP/1.1 200 ")
        assert advanced > 3 * TIMEOUT
    finally:
        sock.close()


def _read_until_body(sock: socket.socket, got: bytes, size: int) -> tuple[bytes, bool]:
    sock.settimeout(10)
    while True:
        _, sep, body = got.partition(b"\r\n\r\n")
        if sep and len(body) >= size:
            return got, False
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk


@pytest_twisted.async_yield_fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[Server, ssl.SSLContext]]:
    """The site behind an ssl: endpoint (downloads by the chunked sender)."""
    key_path, cert_path, cert_pem = make_self_signed(tmp_path)
    server = await start_clocked_server(
        tmp_path,
        f"ssl:0:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1",
        idle_timeout=TIMEOUT,
    )
    context = ssl.create_default_context(cadata=cert_pem.decode())
    yield server, context
    await server.listening.stopListening()


def _tls_get(port: int, context: ssl.SSLContext, path: str) -> ssl.SSLSocket:
    sock = context.wrap_socket(_client(port), server_hostname="localhost")
    sock.sendall(_request(path))
    return sock


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_tls_cuts_off_a_client_that_never_reads(
    tls_server: tuple[Server, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS (the chunked sender) a client that stops reading is aborted too."""
    server, context = tls_server
    started = _spy(monkeypatch, FileSender)
    _, path = await store_file(server, DATA)
    sock = await deferToThread(_tls_get, server.port, context, path)
    try:
        sender = await started.first
        sent = await _stalled(lambda: sender.length - sender.remaining)
        assert sent < SIZE
        server.clock.advance(TIMEOUT - 1)
        await _sleep(0.05)
        assert sender.request is not None
        with capturedLogs() as events:
            server.clock.advance(1)
        assert sender.request is None and sender.handle is None
        assert any("took no byte for 60 s" in formatEvent(e) for e in events)
        got, cut = await deferToThread(_drain, sock)
        assert cut or len(got) < SIZE
    finally:
        sock.close()


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_tls_keeps_a_slow_reader_that_keeps_reading(
    tls_server: tuple[Server, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS a reader taking a little every 0.4 timeouts gets every byte."""
    server, context = tls_server
    started = _spy(monkeypatch, FileSender)
    data = DATA[: 4 * 1024 * 1024]
    _, path = await store_file(server, data)
    sock = await deferToThread(_tls_get, server.port, context, path)
    try:
        sender = await started.first
        got, advanced = await _read_slowly(
            sock, server, sender, lambda: sender.remaining
        )
        rest, cut = await deferToThread(_read_until_body, sock, got, len(data))
        assert not cut
        assert rest.endswith(data) and rest.startswith(b"HTTP/1.1 200 ")
        assert advanced > 3 * TIMEOUT
    finally:
        sock.close()


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_a_site_on_the_real_reactor_cuts_off_a_reader_that_never_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end, real time: idle_timeout=0.5 s ends a stuck download soon after."""
    started = _spy(monkeypatch, sending.SendfileSender)
    server = start_server(tmp_path, idle_timeout=0.5)
    try:
        _, path = await store_file(server, DATA)
        sock = _client(server.port)
        try:
            sock.sendall(_request(path))
            sender = await started.first
            await _until(lambda: sender.request is None, within=5.0)
            got, cut = await deferToThread(_drain, sock)
            assert cut or len(got) < SIZE
        finally:
            sock.close()
    finally:
        await server.listening.stopListening()
