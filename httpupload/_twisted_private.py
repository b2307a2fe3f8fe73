"""Every touch of Twisted's private or undocumented state, in one place.

twisted.web gives no public hook between "the request head is parsed" and
"the body is read", yet that is where a PUT is judged (so a refusal goes out
before the body) and where its body is turned towards storage.  So we hook
``HTTPChannel``'s undocumented per-request methods and read and write a few
of its private attributes; this module is the only one that does, and
``tests/test_twisted_private.py`` pins each of them, so a Twisted release
that changes them fails that test first, with a name, rather than the
upload path in some odd way.  The rest of the package sees ``HookedChannel``'s
two hooks of our own (``head_line``, ``head_complete``) and the functions
below.

What is touched, and where Twisted defines it (twisted/web/http.py):

- ``HTTPChannel.headerReceived(line)`` and ``HTTPChannel.allHeadersReceived()``:
  undocumented methods called by ``lineReceived`` for each header line and
  once the head is in;
- ``HTTPChannel._command``, ``._path``, ``._version``: the request line,
  kept on the channel until ``allHeadersReceived`` makes the request;
  ``._path`` is rewritten (absolute-form targets, RFC 9112 §3.2.2);
- ``HTTPChannel.length``: the body length the channel will read; set to 0
  to read no body at all (the request is answered from its head);
- ``HTTPChannel.requests``: the requests of the connection, newest last;
- ``HTTPChannel.writeHeaders(version, code, reason, headers)``: called by
  ``Request.write`` to send the head (we drop ``Server``);
- ``Request._disconnected``: set once the connection is gone.

For downloads (``storage.sending``, ``storage.s3.read``), the twisted.web
connection behind a storage ``Sink`` and the TCP transport internals that
``sendfile`` relies on (pinned by ``tests/test_sendfile_private.py``):

- ``Request.channel``: the request's ``HTTPChannel``, None once the
  connection is gone; its ``transport`` (the connection), ``callLater``
  (``TimeoutMixin``'s clock, the site's reactor) and ``site.timeOut`` (the
  idle timeout the ``Site`` was given; the channel's own copy is None while
  a request is answered);
- ``tcp.Connection.dataBuffer``, ``.offset`` and ``._tempDataLen``
  (twisted/internet/abstract.py ``FileDescriptor``): what the transport
  still has to send.  ``sendfile`` writes behind the transport's back, so
  the response head must be out of that buffer first;
- ``tcp.Connection.reactor``: the reactor the socket is registered with,
  which watches our duplicate of the socket for writability.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import cast

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers


class Head(Enum):
    """What the channel does with a request whose head is in."""

    READ_BODY = "read the body as twisted.web would"
    ANSWER_NOW = "read no body: process the request now, then close"
    CLOSE_AFTER = "read the body, answer, then close"


class HookedChannel(HTTPChannel):
    """An ``HTTPChannel`` whose per-request internals become two hooks of ours.

    ``head_line`` sees each header before twisted.web parses it;
    ``head_complete`` sees the whole head before the body is read, may
    rewrite the target, and says what happens to the body.
    """

    def head_line(self, request: Request | None, name: bytes, value: bytes) -> bool:
        """A header line (``name`` lower-cased); False keeps it from twisted.web."""
        return True

    def head_complete(
        self,
        request: Request,
        method: bytes,
        target: bytes,
        version: bytes,
        length: int | None,
    ) -> tuple[bytes, Head]:
        """The head is in: the target to use, and what to do with the body."""
        return target, Head.READ_BODY

    def headerReceived(self, line: bytes) -> bool:
        name, sep, value = line.partition(b":")
        if sep and not self.head_line(newest_request(self), name.lower(), value):
            return True
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        target, body = self.head_complete(
            request, self._command, self._path, self._version, self.length
        )
        self._path = target
        super().allHeadersReceived()
        if body is not Head.READ_BODY:
            self.persistent = False
        if body is Head.ANSWER_NOW:
            # No body follows as far as twisted.web is concerned: the request
            # is processed (and refused) now, then the connection closes.
            self.length = 0

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        """Send the head without twisted.web's ``Server: TwistedWeb/<version>``."""
        if isinstance(headers, Headers):
            headers.removeHeader(b"Server")
        super().writeHeaders(version, code, reason, headers)


def newest_request(channel: HTTPChannel) -> Request | None:
    """The request whose head the channel is reading, if any."""
    requests = channel.requests
    return requests[-1] if requests else None


def is_disconnected(request: object) -> bool:
    """Whether the request's connection is gone (``Request._disconnected``)."""
    return bool(getattr(request, "_disconnected", False))


def connection_of(sink: object) -> object | None:
    """The transport of a sink's connection (``Request.channel``); None once gone."""
    return getattr(getattr(sink, "channel", None), "transport", None)


def watchdog_clock(
    sink: object,
) -> tuple[Callable[[float, Callable[[], None]], IDelayedCall], float] | None:
    """The clock and idle timeout (seconds) of a sink's connection, if it has both.

    None for a sink without a channel (gone, or not twisted.web's) and for
    a site whose timeout is off.
    """
    channel = getattr(sink, "channel", None)
    call_later = getattr(channel, "callLater", None)
    timeout = getattr(getattr(channel, "site", None), "timeOut", None)
    if call_later is None or not isinstance(timeout, int | float) or timeout <= 0:
        return None
    clock = cast(Callable[[float, Callable[[], None]], IDelayedCall], call_later)
    return clock, float(timeout)


def plain_tcp_transport(sink: object) -> tcp.Connection | None:
    """A sink's TCP transport if nothing sits between it and the socket.

    None over TLS, HTTP/2 or anything else, and if the transport lacks the
    buffer attributes ``head_flushed`` reads (a Twisted that changed them).
    """
    transport = connection_of(sink)
    if not isinstance(transport, tcp.Connection):
        return None
    if not all(
        hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")
    ):
        return None
    return transport


def head_flushed(transport: tcp.Connection) -> bool:
    """Whether the transport has sent everything written to it (the head)."""
    return len(transport.dataBuffer) == transport.offset and not transport._tempDataLen


def transport_reactor(transport: tcp.Connection) -> IReactorFDSet:
    """The reactor the transport's socket is registered with."""
    return transport.reactor


__all__ = [
    "Head",
    "HookedChannel",
    "connection_of",
    "head_flushed",
    "is_disconnected",
    "newest_request",
    "plain_tcp_transport",
    "transport_reactor",
    "watchdog_clock",
]
