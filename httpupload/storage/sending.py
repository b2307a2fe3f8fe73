"""Streaming a local file into an HTTP response.

Over plain TCP the kernel moves the bytes itself (``sendfile``: no copy
through Python, which is what bounds a large download otherwise); over TLS,
or on a transport we do not know, the bytes go through the request a chunk
at a time.  Both honour the client's pace and stop when it goes away.
"""

from __future__ import annotations

import errno
import os
from typing import Any, BinaryIO

from twisted.internet import tcp
from twisted.internet.interfaces import IPullProducer, IPushProducer, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

log = Logger()

# Large enough that a big download costs few trips through Python.
CHUNK_SIZE = 256 * 1024
# One sendfile call moves at most this much (the socket takes less anyway).
SENDFILE_MAX = 16 * 1024 * 1024


def send_file(request: Request, handle: BinaryIO, offset: int, length: int) -> None:
    """Send ``length`` bytes of ``handle`` from ``offset``, then finish ``request``."""
    transport = _plain_tcp(request)
    if transport is not None and length > 0:
        SendfileSender(request, transport, handle, offset, length).start()
    else:
        FileSender(request, handle, offset, length).start()


def _plain_tcp(request: Request) -> Any | None:
    """The request's TCP transport if nothing sits between it and the socket."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if not isinstance(transport, tcp.Connection) or not hasattr(os, "sendfile"):
        return None
    # The transport's own buffer (the response head) must be flushed before
    # the kernel sends file bytes behind its back: we watch these to know.
    if not all(
        hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")
    ):
        return None
    return transport


@implementer(IPullProducer)
class FileSender:
    """Writes ``length`` bytes of ``handle`` from ``offset`` on, then finishes."""

    def __init__(
        self, request: Request, handle: BinaryIO, offset: int, length: int
    ) -> None:
        self.request: Request | None = request
        self.handle: BinaryIO | None = handle
        if offset:
            handle.seek(offset)
        self.remaining = length

    def start(self) -> None:
        assert self.request is not None
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.request is None or self.handle is None:
            return
        data = (
            self.handle.read(min(CHUNK_SIZE, self.remaining)) if self.remaining else b""
        )
        if data:
            self.remaining -= len(data)
            # May re-enter resumeProducing through the transport.
            self.request.write(data)
            return
        request = self.request
        self.stopProducing()
        request.unregisterProducer()
        if self.remaining:
            # The file is shorter than recorded: cut the response rather
            # than end it as if it were whole.
            request.loseConnection()  # type: ignore[attr-defined]
        else:
            request.finish()

    def stopProducing(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle = None
        self.request = None


@implementer(IPushProducer, IWriteDescriptor)
class SendfileSender:
    """``sendfile`` from the file to the socket whenever the socket can take more.

    The reactor watches a duplicate of the socket's descriptor for us (the
    transport keeps its own registration for reading), and this object is
    the request's producer, so a client that goes away stops it.
    """

    def __init__(
        self,
        request: Request,
        transport: tcp.Connection,
        handle: BinaryIO,
        offset: int,
        length: int,
    ) -> None:
        self.request: Request | None = request
        self.transport = transport
        self.handle: BinaryIO | None = handle
        self.offset = offset
        self.remaining = length
        self._fd = -1
        self._watching = False
        self._paused = False

    # IWriteDescriptor, for the reactor.
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "SendfileSender"

    def start(self) -> None:
        assert self.request is not None
        self.request.registerProducer(self, True)
        # The response head goes through the transport, as for any response.
        self.request.write(b"")
        try:
            self._fd = os.dup(self.transport.fileno())
        except OSError:
            self._fail()
            return
        self._watch()

    def _watch(self) -> None:
        if not self._watching and self._fd >= 0:
            self.transport.reactor.addWriter(self)  # type: ignore[attr-defined]
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self.transport.reactor.removeWriter(self)  # type: ignore[attr-defined]
            self._watching = False

    def _head_flushed(self) -> bool:
        t = self.transport
        return len(t.dataBuffer) == t.offset and not t._tempDataLen

    def doWrite(self) -> None:
        if self.handle is None or self.request is None:
            self._unwatch()
            return
        if not self._head_flushed():
            return  # the transport sends it first: it is writable too
        try:
            sent = os.sendfile(
                self._fd,
                self.handle.fileno(),
                self.offset,
                min(self.remaining, SENDFILE_MAX),
            )
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return
            self._fail()
            return
        if sent == 0:
            # The file is shorter than recorded: cut the response rather
            # than end it as if it were whole.
            self._fail()
            return
        self.offset += sent
        self.remaining -= sent
        self.request.sentLength += sent  # type: ignore[attr-defined]
        if self.remaining == 0:
            request = self.request
            self._release()
            request.unregisterProducer()
            request.finish()

    def connectionLost(self, reason: Failure) -> None:
        self._watching = False  # the reactor has dropped us already
        self._fail()

    def _fail(self) -> None:
        request = self.request
        self._release()
        if request is not None:
            request.unregisterProducer()
            self.transport.abortConnection()

    def _release(self) -> None:
        self._unwatch()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.request = None

    # IPushProducer, for the request.
    def pauseProducing(self) -> None:
        self._paused = True
        self._unwatch()

    def resumeProducing(self) -> None:
        self._paused = False
        if self.request is not None:
            self._watch()

    def stopProducing(self) -> None:
        self._release()
