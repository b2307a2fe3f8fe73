"""Streaming a local file into a ``Sink`` (a twisted.web response, in practice).

Over plain TCP the kernel moves the bytes itself (``sendfile``: no copy
through Python, which is what bounds a large download otherwise); over TLS,
or on a transport we do not know, the bytes go through the sink a chunk
at a time.  Both honour the client's pace and stop when it goes away.

A client that stops reading is cut off: twisted.web suspends a connection's
idle timeout while a response is being written, so without a timeout of our
own such a client would hold its connection and the file for ever.  Every
download path (sendfile, the chunked sender, the S3 relay in ``s3.read``)
runs a ``WriteWatchdog``: when the socket has taken no byte for the site's
idle timeout (``Site.timeOut``, ``[http] idle_timeout``, 60 s by default),
the connection is aborted and one info line logged.  A slow reader that
keeps taking bytes is never cut off.  The watchdog runs on the channel's
``callLater`` (the site's reactor), so tests drive it with a ``Clock``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import BinaryIO

from twisted.internet import tcp
from twisted.internet.interfaces import (
    IDelayedCall,
    IPullProducer,
    IPushProducer,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from httpupload._twisted_private import (
    connection_of,
    head_flushed,
    plain_tcp_transport,
    transport_reactor,
    watchdog_clock,
)
from httpupload.storage import Sink

log = Logger()

# Large enough that a big download costs few trips through Python.
CHUNK_SIZE = 256 * 1024
# One sendfile call moves at most this much (the socket takes less anyway).
SENDFILE_MAX = 16 * 1024 * 1024


class WriteWatchdog:
    """Calls ``stalled`` once no ``progress`` was seen for ``timeout`` seconds."""

    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], IDelayedCall],
        timeout: float,
        stalled: Callable[[], None],
    ) -> None:
        self.timeout = timeout
        self._call_later = call_later
        self._stalled = stalled
        self._call: IDelayedCall | None = None

    @classmethod
    def for_sink(cls, sink: Sink, stalled: Callable[[], None]) -> WriteWatchdog | None:
        """A watchdog on the sink's connection clock and idle timeout.

        None when the sink has no such connection (gone already, or a host
        site whose timeout is off): nothing is watched then.
        """
        found = watchdog_clock(sink)
        if found is None:
            return None
        call_later, timeout = found
        return cls(call_later, timeout, stalled)

    def start(self) -> None:
        if self._call is None:
            self._call = self._call_later(self.timeout, self._fire)

    def progress(self) -> None:
        """The socket took bytes: the time starts again."""
        if self._call is not None and self._call.active():
            self._call.reset(self.timeout)

    def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        self._stalled()


def abort_connection(sink: Sink) -> None:
    """Drop the sink's connection now, unsent bytes and all.

    ``loseConnection`` would wait for the buffers to drain, which a client
    that does not read never lets happen.
    """
    transport = connection_of(sink)
    if transport is None:
        return  # the connection is gone already
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        sink.loseConnection()


def log_stall(timeout: float, sent: int, length: int) -> None:
    log.info(
        "Cutting off a download whose client took no byte for {timeout:g} s "
        "({sent} of {length} bytes sent)",
        timeout=timeout,
        sent=sent,
        length=length,
    )


def send_file(sink: Sink, handle: BinaryIO, offset: int, length: int) -> None:
    """Send ``length`` bytes of ``handle`` from ``offset``, then finish ``sink``."""
    transport = plain_tcp_transport(sink) if hasattr(os, "sendfile") else None
    if transport is not None and length > 0:
        SendfileSender(sink, transport, handle, offset, length).start()
    else:
        FileSender(sink, handle, offset, length).start()


@implementer(IPullProducer)
class FileSender:
    """Writes ``length`` bytes of ``handle`` from ``offset`` on, then finishes."""

    def __init__(self, sink: Sink, handle: BinaryIO, offset: int, length: int) -> None:
        self.request: Sink | None = sink
        self.handle: BinaryIO | None = handle
        self.offset = offset
        self.length = length
        self.remaining = length
        self._watchdog = WriteWatchdog.for_sink(sink, self._stalled)

    def start(self) -> None:
        assert self.request is not None
        if self._watchdog is not None:
            self._watchdog.start()
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        # Called whenever the transport wants more: the client is reading.
        if self.request is None or self.handle is None:
            return
        if self._watchdog is not None:
            self._watchdog.progress()
        try:
            if self.offset:
                self.handle.seek(self.offset)
                self.offset = 0
            data = (
                self.handle.read(min(CHUNK_SIZE, self.remaining))
                if self.remaining
                else b""
            )
        except OSError:
            log.failure("Reading a stored file failed midway")
            self._cut()
            return
        if data:
            self.remaining -= len(data)
            # May re-enter resumeProducing through the transport.
            self.request.write(data)
            return
        if self.remaining:
            # The file is shorter than recorded: cut the response rather
            # than end it as if it were whole.
            self._cut()
            return
        request = self.request
        self.stopProducing()
        request.unregisterProducer()
        request.finish()

    def _stalled(self) -> None:
        assert self._watchdog is not None
        log_stall(self._watchdog.timeout, self.sent, self.length)
        self._cut()

    @property
    def sent(self) -> int:
        return self.length - self.remaining

    def _cut(self) -> None:
        request = self.request
        self.stopProducing()
        if request is not None:
            request.unregisterProducer()
            abort_connection(request)

    def stopProducing(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
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
        sink: Sink,
        transport: tcp.Connection,
        handle: BinaryIO,
        offset: int,
        length: int,
    ) -> None:
        self.request: Sink | None = sink
        self.transport = transport
        self._reactor = transport_reactor(transport)
        self.handle: BinaryIO | None = handle
        self.offset = offset
        self.length = length
        self.remaining = length
        self._fd = -1
        self._watching = False
        self._paused = False
        self._watchdog = WriteWatchdog.for_sink(sink, self._stalled)

    # IWriteDescriptor, for the reactor.
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "SendfileSender"

    def start(self) -> None:
        assert self.request is not None
        if self._watchdog is not None:
            self._watchdog.start()
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
            self._reactor.addWriter(self)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._reactor.removeWriter(self)
            self._watching = False

    def doWrite(self) -> None:
        if self.handle is None or self.request is None:
            self._unwatch()
            return
        if not head_flushed(self.transport):
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
        if self._watchdog is not None:
            self._watchdog.progress()
        self.offset += sent
        self.remaining -= sent
        self.request.sentLength += sent
        if self.remaining == 0:
            request = self.request
            self._release()
            request.unregisterProducer()
            request.finish()

    def connectionLost(self, reason: Failure) -> None:
        self._watching = False  # the reactor has dropped us already
        self._fail()

    def _stalled(self) -> None:
        assert self._watchdog is not None
        log_stall(self._watchdog.timeout, self.length - self.remaining, self.length)
        self._fail()

    def _fail(self) -> None:
        request = self.request
        self._release()
        if request is not None:
            request.unregisterProducer()
            self.transport.abortConnection()

    def _release(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
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
