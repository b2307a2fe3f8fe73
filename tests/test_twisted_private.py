"""Pins every piece of Twisted's private state that httpupload touches.

``httpupload._twisted_private`` is the one module that reaches into
``HTTPChannel`` and ``Request`` internals; these tests drive a bare
``HookedChannel`` over a ``StringTransport`` so that a Twisted release that
renames or reorders them fails here first, by name.
"""

from __future__ import annotations

import inspect

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request

from httpupload._twisted_private import (
    Head,
    HookedChannel,
    is_disconnected,
    newest_request,
)


class Seen(Request):
    """Answers 204 with nothing, and remembers what it was asked."""

    processed: list[Seen] = []

    def process(self) -> None:
        self.processed.append(self)
        self.body = self.content.read() if self.content is not None else b""
        self.setResponseCode(204)
        # What twisted.web.server.Request.process sets on every response.
        self.setHeader(b"Server", b"TwistedWeb/0")
        self.setHeader(b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT")
        self.finish()


class Recording(HookedChannel):
    """A hooked channel that records its hooks and answers as told."""

    def __init__(self, body: Head = Head.READ_BODY, target: bytes | None = None):
        super().__init__()
        self.requestFactory = Seen
        self.lines: list[tuple[Request | None, bytes, bytes]] = []
        self.heads: list[tuple[Request, bytes, bytes, bytes, int | None]] = []
        self.body = body
        self.target = target

    def head_line(self, request: Request | None, name: bytes, value: bytes) -> bool:
        self.lines.append((request, name, value))
        return name != b"x-drop"

    def head_complete(
        self,
        request: Request,
        method: bytes,
        target: bytes,
        version: bytes,
        length: int | None,
    ) -> tuple[bytes, Head]:
        self.heads.append((request, method, target, version, length))
        return (self.target or target), self.body


def connect(channel: HTTPChannel) -> StringTransport:
    Seen.processed = []
    channel.callLater = Clock().callLater  # type: ignore[assignment]
    transport = StringTransport()
    channel.makeConnection(transport)
    return transport


HEAD = b"PUT /a/b.txt HTTP/1.1\r\nHost: x\r\nX-Drop: 1\r\nContent-Length: 5\r\n\r\n"


def test_head_line_sees_each_header_of_the_newest_request() -> None:
    """headerReceived calls head_line with the request, the lower-cased name and
    the raw value; False keeps the header from twisted.web."""
    channel = Recording()
    connect(channel)
    channel.dataReceived(HEAD + b"hello")
    names = [name for _, name, _ in channel.lines]
    assert names == [b"host", b"x-drop", b"content-length"]
    request = Seen.processed[0]
    assert all(seen is request for seen, _, _ in channel.lines)
    assert channel.lines[2][2] == b" 5"
    assert not request.requestHeaders.hasHeader(b"X-Drop")
    assert request.requestHeaders.getRawHeaders(b"Host") == [b"x"]


def test_head_complete_sees_the_request_line_and_length_before_the_body() -> None:
    """allHeadersReceived hands over _command, _path, _version and length
    before any body byte, and the target returned becomes the request's path."""
    channel = Recording(target=b"/other/c.txt?q")
    connect(channel)
    channel.dataReceived(HEAD)
    assert len(channel.heads) == 1
    request, method, target, version, length = channel.heads[0]
    assert (method, target, version, length) == (b"PUT", b"/a/b.txt", b"HTTP/1.1", 5)
    assert Seen.processed == []
    channel.dataReceived(b"hello")
    assert Seen.processed == [request]
    assert request.path == b"/other/c.txt"
    assert request.uri == b"/other/c.txt?q"
    assert Seen.processed[0].body == b"hello"


def test_answer_now_processes_without_reading_the_body_then_closes() -> None:
    """ANSWER_NOW: length 0 makes twisted.web process the request at once and
    the connection closes after the answer."""
    channel = Recording(body=Head.ANSWER_NOW)
    transport = connect(channel)
    channel.dataReceived(HEAD)
    assert len(Seen.processed) == 1
    assert Seen.processed[0].body == b""
    assert transport.value().startswith(b"HTTP/1.1 204 ")
    assert transport.disconnecting


def test_close_after_reads_the_body_then_closes() -> None:
    """CLOSE_AFTER: the body is read and the request answered, then the
    connection is not kept alive."""
    channel = Recording(body=Head.CLOSE_AFTER)
    transport = connect(channel)
    channel.dataReceived(HEAD)
    assert Seen.processed == []
    channel.dataReceived(b"hello")
    assert Seen.processed[0].body == b"hello"
    assert transport.disconnecting


def test_read_body_keeps_the_connection_alive() -> None:
    """READ_BODY leaves twisted.web's keep-alive as it was."""
    channel = Recording()
    transport = connect(channel)
    channel.dataReceived(HEAD + b"hello")
    assert transport.value().startswith(b"HTTP/1.1 204 ")
    assert not transport.disconnecting


def test_write_headers_sends_no_server_header() -> None:
    """writeHeaders is how Request.write sends the head: no Server in it."""
    channel = Recording()
    transport = connect(channel)
    channel.dataReceived(HEAD + b"hello")
    head = transport.value().split(b"\r\n\r\n")[0].lower()
    assert b"\r\nserver:" not in head
    assert b"\r\ndate:" in head


def test_newest_request_is_the_one_being_read() -> None:
    """HTTPChannel.requests holds the requests, newest last; none before a line."""
    channel = Recording()
    connect(channel)
    assert newest_request(channel) is None
    channel.dataReceived(b"GET / HTTP/1.1\r\n")
    request = newest_request(channel)
    assert isinstance(request, Seen)
    assert request is channel.requests[-1]


def test_is_disconnected_follows_the_connection() -> None:
    """Request._disconnected is False while connected, True once the connection
    is lost."""
    channel = Recording()
    connect(channel)
    channel.dataReceived(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
    request = newest_request(channel)
    assert request is not None
    assert not is_disconnected(request)
    channel.connectionLost(Failure(ConnectionError("gone")))
    assert is_disconnected(request)
    assert not is_disconnected(object())


def test_hooked_methods_keep_their_signatures() -> None:
    """The HTTPChannel methods we override still take what we pass them."""
    assert list(inspect.signature(HTTPChannel.headerReceived).parameters) == [
        "self",
        "line",
    ]
    assert list(inspect.signature(HTTPChannel.allHeadersReceived).parameters) == [
        "self"
    ]
    assert list(inspect.signature(HTTPChannel.writeHeaders).parameters) == [
        "self",
        "version",
        "code",
        "reason",
        "headers",
    ]
    channel = HTTPChannel()
    connect(channel)
    channel.dataReceived(b"GET /x HTTP/1.0\r\n")
    assert (channel._command, channel._path, channel._version) == (
        b"GET",
        b"/x",
        b"HTTP/1.0",
    )
    assert channel.length == 0
    assert len(channel.requests) == 1
