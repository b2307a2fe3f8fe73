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

The PUT itself is owned by one ``StreamedPut`` (``httpupload.web.put``),
which the request makes once the head is in and forwards the body to; the
channel and request here only read the wire.  Their hooks into twisted.web's
internals are ``httpupload._twisted_private``'s.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request as HTTPRequest
from twisted.web.http import datetimeToString
from twisted.web.server import Request
from zope.interface import implementer

from httpupload._twisted_private import Head, HookedChannel
from httpupload.web.incoming import IncomingUpload
from httpupload.web.interfaces import (
    IPut,
    IPutConnection,
    IStreamingRequest,
    IUploadDesk,
)
from httpupload.web.put import StreamedPut
from httpupload.web.responses import answer_failure, apply_common_headers, plain
from httpupload.web.settings import DEFAULT_SETTINGS, WebSettings
from httpupload.web.wire import content_length, head_problem, origin_form

# A refused body up to this size is read and dropped rather than cut off.
DISCARD_LIMIT = 1024 * 1024

log = Logger()


@implementer(IStreamingRequest)
class UploadRequest(Request):
    """A request whose PUT body goes to its ``StreamedPut``, not to memory."""

    _put: StreamedPut | None = None
    # The method a POST's X-HTTP-Method-Override names (tus), if any.
    _override: bytes | None = None
    # Why the head is refused with a 400 before anything else sees it.
    _bad: str | None = None
    # Content-Length and Transfer-Encoding headers seen so far.
    _framing: tuple[bytes, ...] = ()

    def _upload_channel(self) -> UploadChannel | None:
        channel = self.channel
        return channel if isinstance(channel, UploadChannel) else None

    def web_settings(self) -> WebSettings:
        channel = self._upload_channel()
        return DEFAULT_SETTINGS if channel is None else channel.settings

    def streamed_put(self) -> IPut | None:
        return self._put

    def reject(self, reason: str) -> None:
        """Answer 400 with ``reason`` (the first one given), whatever was asked."""
        if self._bad is None:
            self._bad = reason

    @property
    def bad(self) -> str | None:
        return self._bad

    @property
    def refused(self) -> bool:
        """Whether a PUT was refused from its head."""
        return self._put is not None and self._put.refused()

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
            if self._override is not None:
                self.method = self._override
            super().process()
            return
        self.site = self.channel.site  # type: ignore[attr-defined]
        try:
            self.setHeader(b"Date", datetimeToString())
            apply_common_headers(self)
            self.write(plain(self, 400, self._bad))
            self.finish()
        except Exception:
            answer_failure(self, Failure())

    def processingFailed(self, reason: Failure) -> Failure:
        """An exception while rendering: a plain 500, or a cut connection.

        twisted.web's own version writes an HTML page even into a response
        whose head is already out, and raises again if finishing fails.
        """
        answer_failure(self, reason)
        return reason

    def headers_received(
        self,
        method: bytes,
        path: bytes,
        length: int | None,
        version: bytes = b"HTTP/1.1",
    ) -> None:
        """A PUT (or an append) gets its owner, which judges it from its headers.

        tus clients that cannot send PATCH or DELETE send a POST with
        ``X-HTTP-Method-Override`` (tus 1.0 says servers must honour it):
        the request is then handled as the method it names.
        """
        channel = self._upload_channel()
        if method == b"POST":
            override = self.requestHeaders.getRawHeaders(b"X-HTTP-Method-Override")
            if override and override[0].strip().upper() in (b"PATCH", b"DELETE"):
                method = override[0].strip().upper()
                self._override = method
        if method not in (b"PUT", b"PATCH") or channel is None:
            return
        self._put = StreamedPut(
            self,
            channel,
            channel.desk,
            channel.settings,
            channel.clock,
            path,
            length,
            method,
            version,
        )

    def gotLength(self, length: int | None) -> None:
        if self._upload_channel() is None:
            # Not our channel: twisted.web's spooling, for the resource's
            # fallback (httpupload.web.put.spooled_put).
            super().gotLength(length)
            return
        # No body is kept (twisted.web would spool a large one to disk):
        # a PUT's goes to storage, any other is read and dropped.
        # requestReceived() still calls tell() and seek() on content.
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self._put is not None:
            self._put.body_received(data)
        elif self._upload_channel() is None:
            super().handleContentChunk(data)
        # Any other method's body is read and dropped.

    def connectionLost(self, reason: Failure) -> None:
        if self._put is not None:
            self._put.connection_lost()
        super().connectionLost(reason)


@implementer(IPutConnection)
class UploadChannel(HookedChannel):
    """Reads request heads for our request, and bounds them.

    At most ``maxHeaders`` headers of ``totalHeadersSize`` bytes, arriving
    within the settings' ``header_timeout`` seconds (the idle timeout alone
    would let a client trickle one byte a minute).  ``desk``, ``settings``
    and ``clock`` are given by the site that builds the channel.
    """

    maxHeaders = 100
    totalHeadersSize = 16384
    desk: IUploadDesk | None = None
    settings: WebSettings = DEFAULT_SETTINGS
    clock: IReactorTime | None = None
    _header_timer: IDelayedCall | None = None

    def __init__(self) -> None:
        super().__init__()
        # Uploads received on this connection, released when it closes.
        self.uploads: set[IncomingUpload] = set()

    @classmethod
    def serving(
        cls, desk: IUploadDesk, settings: WebSettings, clock: IReactorTime
    ) -> type[UploadChannel]:
        """A channel class for a host ``Site`` that builds channels itself."""
        return type(
            cls.__name__,
            (cls,),
            {"desk": desk, "settings": settings, "clock": clock},
        )

    # -- what a PUT may ask (IPutConnection) ----------------------------------

    def cut_off(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def hold_body(self) -> Callable[[], None] | None:
        transport = self.transport
        if transport is None:
            return None
        transport.pauseProducing()  # type: ignore[attr-defined]
        saved_timeout = self.setTimeout(None)

        def resume() -> None:
            if transport.connected:  # type: ignore[attr-defined]
                self.setTimeout(saved_timeout)
                transport.resumeProducing()  # type: ignore[attr-defined]

        return resume

    def keep_until_closed(self, upload: IncomingUpload) -> None:
        self.uploads.add(upload)

    def interim(self, head: bytes) -> None:
        if self.transport is not None:
            self.transport.write(head)

    def close_before_release(self) -> bool:
        if self.transport is not None and self.uploads:
            self.loseConnection()
            return True
        return False

    # -- reading the head ------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        timeout = self.settings.header_timeout
        if self._header_timer is None and timeout:
            self._header_timer = self.callLater(timeout, self._headers_too_slow)
        super().lineReceived(line)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        log.info("Closing a connection whose request head took too long")
        self.cut_off()

    def head_line(self, request: HTTPRequest | None, name: bytes, value: bytes) -> bool:
        """Check the framing headers before twisted.web parses them.

        A refused one is kept from twisted.web (which would answer a bare
        400, or drop the connection on a number too long to read): the
        request is then answered 400 with the reason, at once.
        """
        if name in (b"content-length", b"transfer-encoding") and isinstance(
            request, UploadRequest
        ):
            return request.framing_header(name, value)
        return True

    def head_complete(
        self,
        request: HTTPRequest,
        method: bytes,
        target: bytes,
        version: bytes,
        length: int | None,
    ) -> tuple[bytes, Head]:
        self._cancel_header_timer()
        if not isinstance(request, UploadRequest):
            return target, Head.READ_BODY
        target = origin_form(target)
        problem = head_problem(method, version, request.requestHeaders)
        if problem is not None:
            request.reject(problem)
        if request.bad is None:
            request.headers_received(method, target, length, version)
        # What is answered without its body: a refusal, or a method that
        # takes none (a body it announces is read and dropped, if small).
        unwanted = (
            request.bad is not None
            or request.refused
            or (
                method not in (b"PUT", b"PATCH")
                and request.streamed_put() is None
                and length != 0
            )
        )
        if unwanted and self._answer_at_once(request, length):
            request.requestHeaders.removeHeader(b"Expect")
            return target, Head.ANSWER_NOW
        if request.bad is not None:
            return target, Head.CLOSE_AFTER
        return target, Head.READ_BODY

    def _answer_at_once(self, request: UploadRequest, length: int | None) -> bool:
        expect = request.requestHeaders.getRawHeaders(b"Expect") or []
        return (
            any(v.strip().lower() == b"100-continue" for v in expect)
            or length is None
            or length > DISCARD_LIMIT
        )

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # type: ignore[assignment]
        self._cancel_header_timer()
        super().connectionLost(reason)
        uploads, self.uploads = self.uploads, set()
        for upload in uploads:
            upload.release()


__all__ = ["UploadChannel", "UploadRequest"]
