"""Streaming a range of an S3 object into a ``Sink`` (a twisted.web response).

The object's info came from a HEAD (``open_read``); ``send`` issues a GET
with ``Range`` (and ``If-Match`` on the HEAD's ETag, so the bytes are those
of the info) and relays the body as it arrives.  Backpressure both ways: the
relay is a push producer registered on the request, and when the client is
slow it pauses the S3 response's transport, so nothing piles up in memory.
If S3 fails midway (or sends fewer bytes than promised) the client's
connection is cut, never ended as if the file were whole; if the client
goes away the S3 connection is dropped.

A ``WriteWatchdog`` (see ``sending``) cuts the client off when no byte has
moved to it for the site's idle timeout: a client that stopped reading (its
connection paused us, and nothing resumes it), or an S3 body that stopped
arriving.  Both would otherwise hold the two connections for ever.
"""

from __future__ import annotations

from typing import cast

from treq import content as read_body
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from zope.interface import implementer

from httpupload.storage import FileInfo, Sink
from httpupload.storage.s3.client import S3Client
from httpupload.storage.sending import WriteWatchdog, abort_connection, log_stall

log = Logger()
_DONE = Failure(ResponseDone())


@implementer(IPushProducer)
class BodyRelay(Protocol):
    """Receives an S3 body and writes it into ``sink``, at the client's pace.

    The S3 response's transport (``_source``) is a push producer: the relay
    pauses it while the client is slow and stops it when the client goes.
    """

    def __init__(self, sink: Sink, length: int) -> None:
        self.request: Sink | None = sink
        self.length = length
        self.remaining = length
        self._paused = False
        self._stopped = False
        self._source: IPushProducer | None = None
        self._watchdog = WriteWatchdog.for_sink(sink, self._stalled)

    def start(self) -> None:
        assert self.request is not None
        if self._watchdog is not None:
            self._watchdog.start()
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())

    # IPushProducer, driven by the client's connection.
    def pauseProducing(self) -> None:
        self._paused = True
        if self._source is not None:
            self._source.pauseProducing()

    def resumeProducing(self) -> None:
        # The client's socket took what was buffered for it.
        self._paused = False
        if self._watchdog is not None:
            self._watchdog.progress()
        if self._source is not None:
            self._source.resumeProducing()

    def stopProducing(self) -> None:
        """The client went away: drop the S3 connection (it is mid-body)."""
        self._stopped = True
        self.request = None
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._source is not None:
            self._source.stopProducing()

    def _stalled(self) -> None:
        """Nothing moved for the idle timeout: cut the client off (S3 follows)."""
        request = self.request
        if request is None:
            return
        assert self._watchdog is not None
        log_stall(self._watchdog.timeout, self.length - self.remaining, self.length)
        self.stopProducing()
        request.unregisterProducer()
        abort_connection(request)

    # IProtocol, driven by the S3 response.
    def makeConnection(self, transport: object) -> None:
        # A response body's transport is a push producer (twisted.web.client's
        # TransportProxyProducer), though typed as the transport it wraps.
        source = cast(IPushProducer, transport)
        self._source = source
        if self._stopped:
            source.stopProducing()
        elif self._paused:
            source.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.request is None:
            return
        if len(data) > self.remaining:
            data = data[: self.remaining]
        self.remaining -= len(data)
        if data:
            if self._watchdog is not None and not self._paused:
                self._watchdog.progress()
            self.request.write(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self._source = None
        if reason.check(ResponseDone) and self.remaining == 0:
            self._end(None)
        else:
            self._end(reason)

    def fail(self, reason: object) -> None:
        """The GET did not succeed: cut the response."""
        self._end(reason)

    def _end(self, problem: object) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        request, self.request = self.request, None
        if request is None:
            return
        request.unregisterProducer()
        if problem is None:
            request.finish()
            return
        log.warn("Download cut short: {problem}", problem=problem)
        request.loseConnection()


class S3StoredFile:
    """A ``StoredFile``: an object whose HEAD we have, sent on demand."""

    def __init__(self, client: S3Client, key: str, info: FileInfo, etag: str) -> None:
        self._client = client
        self._key = key
        self._etag = etag
        self.info = info

    def send(self, sink: Sink, offset: int, length: int) -> None:
        if length <= 0:
            sink.finish()
            return
        relay = BodyRelay(sink, length)
        relay.start()
        ensureDeferred(self._get(relay, offset, length)).addErrback(relay.fail)

    async def _get(self, relay: BodyRelay, offset: int, length: int) -> None:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        if self._etag:
            headers["If-Match"] = self._etag
        response = await self._client.request(
            "GET", self._key, headers=headers, timeout=self._client.timeout
        )
        whole = offset == 0 and length == self.info.size
        if response.code == 206 or (response.code == 200 and whole):
            if response.length != length:
                await read_body(response)
                relay.fail(f"S3 sent {response.length} bytes for {length}")
                return
            response.deliverBody(relay)
            return
        await read_body(response)
        relay.fail(f"S3 answered {response.code} to a ranged GET")

    def close(self) -> None:
        """Nothing is held open: the bytes are only asked for on ``send``."""
