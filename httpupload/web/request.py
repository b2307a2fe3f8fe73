"""A twisted.web request that streams a PUT body straight into storage.

twisted.web normally spools a request body into a temporary file of its own
before any resource sees it; for uploads that would be a second full copy.
``UploadChannel`` hands the request its method and path as soon as the
headers are in (they are only on the channel at that point), the request
judges the PUT from its headers and opens the storage write, and
``handleContentChunk`` then feeds it, chunk by chunk.

A refused PUT is answered from its headers.  If the client waits for
``100 Continue`` (or announces a large or unknown length), the refusal goes
out at once, without a ``100``, and the connection closes; a small body
without ``Expect`` is read and dropped first, so the client is sure to see
the answer instead of a reset connection.

The channel also checks the head before twisted.web or the resource sees it
(``httpupload.web.wire``), answering 400 with a short reason, and closing:
a ``Content-Length`` that is not 1 to 19 digits, given twice or beside
``Transfer-Encoding`` (twisted.web would answer a bare 400, or drop the
connection on a number too long for Python to read), a missing or repeated
``Host`` in HTTP/1.1 (RFC 9112 §3.2), a ``PUT`` with ``Content-Range``
(RFC 9110 §14.5).  An absolute-form target (``PUT http://host/<id>/<name>``,
RFC 9112 §3.2.2) is used as its path and query, for judging the PUT, for the
resource and for the log alike.  Bodies of other methods are never kept:
nothing here reads them, so a small one is read and dropped and a large or
chunked one is answered at once, like a refused PUT.

Responses carry no ``Server`` header: the software and its version are
nothing a client needs (RFC 9110 §10.2.4 makes the header optional).
"""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from httpupload.errors import UploadRefused
from httpupload.storage import FileInfo
from httpupload.web.addresses import client_address
from httpupload.web.responses import answer_failure, apply_common_headers, plain
from httpupload.web.uploads import IncomingUpload
from httpupload.web.wire import content_length, head_problem, origin_form

# A refused body up to this size is read and dropped rather than cut off.
DISCARD_LIMIT = 1024 * 1024

log = Logger()


class UploadRequest(Request):
    """A request whose PUT body goes to an ``IncomingUpload``, not to memory."""

    _is_upload = False
    _upload: IncomingUpload | None = None
    _refusal: UploadRefused | None = None
    _rate_timer: IDelayedCall | None = None
    _window_start = 0
    _held_back = False
    # Why the head is refused with a 400 before anything else sees it.
    _bad: str | None = None
    # Content-Length and Transfer-Encoding headers seen so far.
    _framing: tuple[bytes, ...] = ()

    def reject(self, reason: str) -> None:
        """Answer 400 with ``reason`` (the first one given), whatever was asked."""
        if self._bad is None:
            self._bad = reason

    @property
    def bad(self) -> str | None:
        return self._bad

    def framing_header(self, name: bytes, value: bytes) -> bool:
        """Check a Content-Length or Transfer-Encoding; False if it is refused.

        Only one of them, once: several lengths, or a length beside a
        transfer coding, are how requests are smuggled past proxies.
        """
        seen, self._framing = self._framing, (*self._framing, name)
        if self._bad is not None:
            return False
        if name == b"content-length" and content_length(value) is None:
            self.reject("Content-Length must be one number of at most 19 digits")
        elif name == b"transfer-encoding" and value.strip(b" \t").lower() not in (
            b"chunked",
            b"identity",
        ):
            self.reject("Transfer-Encoding must be chunked")
        elif name in seen:
            self.reject(f"{name.decode().title()} must be given once")
        elif seen:
            self.reject("Content-Length and Transfer-Encoding must not both be given")
        return self._bad is None

    def process(self) -> None:
        """Render, unless the head was refused: then a 400 and nothing else."""
        if self._bad is None:
            super().process()
            return
        self.site = self.channel.site  # type: ignore[union-attr,attr-defined]
        try:
            self.setHeader(b"Date", datetimeToString())
            apply_common_headers(self)
            self.write(plain(self, 400, self._bad))
            self.finish()
        except Exception:
            answer_failure(self, Failure())

    def processingFailed(self, reason: Failure) -> Failure:  # type: ignore[override]
        """An exception while rendering: a plain 500, or a cut connection.

        twisted.web's own version writes an HTML page even into a response
        whose head is already out, and raises again if finishing fails.
        """
        answer_failure(self, reason)
        return reason

    def headers_received(self, method: bytes, path: bytes, length: int | None) -> None:
        """Judge a PUT from its headers; called before ``gotLength``."""
        if method != b"PUT":
            return
        self._is_upload = True
        site = getattr(self.channel, "site", None)
        receiver = getattr(site, "uploads", None)
        if receiver is None:
            self._refusal = UploadRefused("This site does not take uploads")
            return
        address = client_address(self, getattr(site, "trusted_proxies", ()))
        try:
            self._upload = receiver.start(path, self.requestHeaders, length, address)
        except UploadRefused as e:
            self._refusal = e
            return
        self._upload.cancel = self._cut_off
        channel = self.channel
        if isinstance(channel, UploadChannel):
            channel.uploads.add(self._upload)
        self.notifyFinish().addBoth(self._answered, self._upload, channel, receiver)
        self._schedule_rate_check()

    @staticmethod
    def _answered(
        _: object, upload: IncomingUpload, channel: object, receiver: object
    ) -> None:
        """The response is written (or the client gone): release the upload.

        While draining, the connection is closed first and the upload released
        only when it is gone, so the answer is flushed before the process exits.
        """
        if getattr(receiver, "draining", False) and isinstance(channel, UploadChannel):
            if channel.transport is not None and channel.uploads:
                channel.loseConnection()
                return
        upload.release()

    @property
    def refused(self) -> bool:
        return self._refusal is not None

    def _cut_off(self) -> None:
        transport = getattr(self.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _schedule_rate_check(self) -> None:
        site = getattr(self.channel, "site", None)
        rate = getattr(site, "min_upload_rate", 0)
        # twisted.web names the idle timeout timeOut.
        window = getattr(site, "timeOut", None) or 0
        if rate and window and self._upload is not None:
            self._window_start = self._upload.bytes_received
            call_later = self.channel.callLater  # type: ignore[union-attr]
            self._rate_timer = call_later(  # type: ignore[call-arg]
                window, self._check_rate, rate, window
            )

    def _check_rate(self, rate: int, window: float) -> None:
        self._rate_timer = None
        upload = self._upload
        if upload is None or upload.finished:
            return
        moved = upload.bytes_received - self._window_start
        if moved < rate * window and not self._held_back:
            log.info(
                "Cutting off an upload slower than {rate} B/s ({moved} bytes in "
                "{window:.0f} s)",
                rate=rate,
                moved=moved,
                window=window,
            )
            self._cut_off()
            return
        self._schedule_rate_check()

    def gotLength(self, length: int | None) -> None:
        # No body is kept (twisted.web would spool a large one to disk):
        # a PUT's goes to storage, any other is read and dropped.
        # requestReceived() still calls tell() and seek() on content.
        self.content = io.BytesIO()  # type: ignore[assignment]

    def handleContentChunk(self, data: bytes) -> None:
        if self._is_upload and self._upload is not None:
            ready = self._upload.write(data)
            if ready is not None:
                self._hold_body(ready)
        # A refused PUT's body, and any other method's, is read and dropped.

    def _hold_body(self, ready: Deferred[None]) -> None:
        """Stop reading the body until storage has caught up (an object store).

        The connection's idle timer stops too: the wait is ours, not the
        client's.  A wait after the last byte needs no pause (commit waits).
        """
        transport = getattr(self.channel, "transport", None)
        upload = self._upload
        if (
            transport is None
            or self._held_back
            or upload is None
            or upload.bytes_received >= upload.slot.size
        ):
            return
        self._held_back = True
        transport.pauseProducing()
        channel = self.channel
        saved_timeout = channel.setTimeout(None)  # type: ignore[union-attr]

        def go_on(_: object) -> None:
            self._held_back = False
            # Time spent waiting on storage is not the client's slowness.
            self._window_start = upload.bytes_received
            if not upload.finished and transport.connected:
                channel.setTimeout(saved_timeout)  # type: ignore[union-attr]
                transport.resumeProducing()

        ready.addBoth(go_on)

    def finish_upload(self) -> Deferred[FileInfo]:
        """Commit the streamed body; fails with the reason it was refused."""
        if self._rate_timer is not None and self._rate_timer.active():
            self._rate_timer.cancel()
        if self._refusal is not None:
            return fail(self._refusal)
        if self._upload is None:
            return fail(UploadRefused("Not an upload"))
        return self._upload.finish()

    def connectionLost(self, reason: Failure) -> None:
        if self._rate_timer is not None and self._rate_timer.active():
            self._rate_timer.cancel()
        upload = self._upload
        if upload is not None and not upload.finished:
            log.info(
                "Upload cut off after {received} of {size} bytes; discarded",
                received=upload.bytes_received,
                size=upload.slot.size,
            )
            upload.abort().addErrback(
                lambda f: log.failure("Discarding a partial upload failed", f)
            )
        super().connectionLost(reason)


class UploadChannel(HTTPChannel):
    """Hands the method and path to the request before its body is read.

    Also bounds the request head: at most ``maxHeaders`` headers of
    ``totalHeadersSize`` bytes, arriving within ``header_timeout`` seconds
    (the idle timeout alone would let a client trickle one byte a minute).
    """

    maxHeaders = 100
    totalHeadersSize = 16384
    header_timeout: float = 30.0
    _header_timer: IDelayedCall | None = None

    def __init__(self) -> None:
        super().__init__()
        # Uploads received on this connection, released when it closes.
        self.uploads: set[IncomingUpload] = set()

    def lineReceived(self, line: bytes) -> None:
        if self._header_timer is None and self.header_timeout:
            self._header_timer = self.callLater(  # type: ignore[attr-defined]
                self.header_timeout, self._headers_too_slow
            )
        super().lineReceived(line)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        log.info("Closing a connection whose request head took too long")
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def headerReceived(self, line: bytes) -> bool:
        """Check the framing headers before twisted.web parses them.

        A refused one is kept from twisted.web (which would answer a bare
        400, or drop the connection on a number too long to read): the
        request is then answered 400 with the reason, at once.
        """
        name, sep, value = line.partition(b":")
        name = name.lower()
        request = self.requests[-1] if self.requests else None
        if (
            sep
            and name in (b"content-length", b"transfer-encoding")
            and isinstance(request, UploadRequest)
            and not request.framing_header(name, value)
        ):
            return True
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        self._cancel_header_timer()
        request = self.requests[-1]
        if not isinstance(request, UploadRequest):
            super().allHeadersReceived()
            return
        self._path = origin_form(self._path)
        problem = head_problem(self._command, self._version, request.requestHeaders)
        if problem is not None:
            request.reject(problem)
        if request.bad is None:
            request.headers_received(self._command, self._path, self.length)
        # What is answered without its body: a refusal, or a method that
        # takes none (a body it announces is read and dropped, if small).
        unwanted = (
            request.bad is not None
            or request.refused
            or (self._command != b"PUT" and self.length != 0)
        )
        if unwanted and self._answer_at_once(request):
            request.requestHeaders.removeHeader(b"Expect")
            super().allHeadersReceived()
            # No body follows as far as twisted.web is concerned: the
            # request is processed (and refused) now, then we close.
            self.persistent = False
            self.length = 0
            return
        super().allHeadersReceived()
        if request.bad is not None:
            self.persistent = False

    def writeHeaders(  # type: ignore[override]
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        """Send the head without twisted.web's ``Server: TwistedWeb/<version>``."""
        if isinstance(headers, Headers):
            headers.removeHeader(b"Server")
        super().writeHeaders(version, code, reason, headers)

    def _answer_at_once(self, request: UploadRequest) -> bool:
        expect = request.requestHeaders.getRawHeaders(b"Expect") or []
        return (
            any(v.strip().lower() == b"100-continue" for v in expect)
            or self.length is None
            or self.length > DISCARD_LIMIT
        )

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # type: ignore[assignment]
        self._cancel_header_timer()
        super().connectionLost(reason)
        uploads, self.uploads = self.uploads, set()
        for upload in uploads:
            upload.release()


__all__ = ["UploadChannel", "UploadRequest"]
