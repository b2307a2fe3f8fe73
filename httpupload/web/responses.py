"""Headers every response carries, and the one place errors become statuses.

Also the last resort of every response: ``answer_failure`` turns an
exception met while answering into a 500 (or, once the head is out, a cut
connection), so no failure leaves a request unanswered; and ``Reply``, which
ends every Deferred chain of a response with a logged failure and cancels
the work of one whose client went away.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from httpupload._twisted_private import is_disconnected
from httpupload.errors import (
    AlreadyComplete,
    AlreadyStored,
    BadUploadRequest,
    DuplicateFile,
    HttpUploadError,
    IncompleteBody,
    InvalidSlot,
    LengthMismatch,
    LengthRequired,
    NoLongerAllowed,
    NoSpace,
    OffsetMismatch,
    ProtocolUnsupported,
    ShuttingDown,
    StorageFull,
    StorageUnavailable,
    StoreDown,
    TooLarge,
    TooManyUploads,
    TypeMismatch,
    UploadGone,
    WrongPatchType,
)
from httpupload.storage.sending import abort_connection
from httpupload.web.addresses import is_secure
from httpupload.web.resumable import REQUEST_HEADERS, RESPONSE_HEADERS
from httpupload.web.settings import settings_of

ALLOWED_METHODS = b"OPTIONS, HEAD, GET, PUT, PATCH, DELETE, POST"

# XEP-0363 §7 (CORS) and §8.1 (isolation of user content).  No
# Allow-Credentials: it is invalid beside a wildcard origin, and the slot's
# Authorization header is sent explicitly, not as a browser credential.
COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Access-Control-Allow-Methods", ALLOWED_METHODS),
    (
        b"Access-Control-Allow-Headers",
        b"Authorization, Content-Type, Range, If-Range, If-None-Match, "
        b"If-Modified-Since, " + REQUEST_HEADERS,
    ),
    (
        b"Access-Control-Expose-Headers",
        b"ETag, Repr-Digest, Content-Range, Content-Length, Content-Disposition, "
        b"Accept-Ranges, Last-Modified, " + RESPONSE_HEADERS,
    ),
    (b"Access-Control-Max-Age", b"86400"),
    (b"Content-Security-Policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
)

_STATUSES: tuple[tuple[type[HttpUploadError], int], ...] = (
    (InvalidSlot, 403),
    (LengthRequired, 411),
    (LengthMismatch, 400),
    (TypeMismatch, 400),
    (IncompleteBody, 400),
    (AlreadyStored, 409),
    (StorageFull, 507),
    (StorageUnavailable, 503),
    # what storage raises, translated here and nowhere else
    (DuplicateFile, 409),
    (NoSpace, 507),
    (StoreDown, 503),
    (TooManyUploads, 429),
    (ShuttingDown, 503),
    (OffsetMismatch, 409),
    (BadUploadRequest, 400),
    (AlreadyComplete, 400),
    (TooLarge, 413),
    (WrongPatchType, 415),
    (UploadGone, 404),
    (NoLongerAllowed, 403),
    (ProtocolUnsupported, 412),
)


HSTS = b"max-age=31536000"

log = Logger()

# Field values are visible characters, spaces and tabs (RFC 9110 §5.5).
_NOT_IN_FIELD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def apply_common_headers(request: Request) -> None:
    for name, value in COMMON_HEADERS:
        request.setHeader(name, value)
    if is_secure(request, settings_of(request).trusted_proxies):
        request.setHeader(b"Strict-Transport-Security", HSTS)


def http_status(error: HttpUploadError) -> int:
    """The status for a refused upload; anything unforeseen is a 500."""
    for kind, status in _STATUSES:
        if isinstance(error, kind):
            return status
    return 500


def header_value(text: str) -> bytes:
    """Any text as bytes that can go in a header: never raises.

    Latin-1 where the text fits it (what clients read header bytes as),
    else UTF-8 (opaque octets to HTTP, RFC 9110 §5.5); control characters
    become spaces and lone surrogates ``\\udcxx`` escapes.
    """
    text = _NOT_IN_FIELD.sub(" ", text)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def plain(request: Request, status: int, text: str) -> bytes:
    """A short text/plain response body, with the status set."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    body = (text + "\n").encode("utf-8", "backslashreplace")
    request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
    return body


def answer_failure(request: Request, reason: Failure) -> None:
    """Answer a request whose handling raised: a 500, or a cut connection.

    Before the response head is out, every header set so far is dropped
    (one of them may be what failed) and a plain 500 goes out with the
    common headers; after it, the status cannot change, so the connection
    is aborted and the client sees a cut-off response rather than a hang.
    Never raises: use it as the last errback of any response's Deferred.
    """
    log.failure("Answering {method} failed", reason, method=_method(request))
    if request.finished or is_disconnected(request):
        return
    try:
        # A producer registered (a download under way) may write at any time.
        if not request.startedWriting and getattr(request, "producer", None) is None:
            request.responseHeaders = Headers()
            apply_common_headers(request)
            request.write(plain(request, 500, "Internal server error"))
            request.finish()
            return
    except Exception:
        log.failure("Sending a 500 failed")
    abort_connection(request)


def _method(request: Request) -> str:
    method = getattr(request, "method", b"") or b""
    return method.decode("ascii", "backslashreplace")[:16]


def refuse(request: Request, error: HttpUploadError) -> bytes:
    return plain(request, http_status(error), str(error))


class Reply:
    """The answer to one request, for as long as its client is there.

    Finishes the request unless its client has gone away meanwhile, runs
    ``on_gone`` callbacks when it goes (klein's ``notifyFinish`` errback:
    cancel work nobody can use any more), and ends a response's Deferred
    chain with ``failed``: a logged failure, never a dropped one.
    """

    def __init__(self, request: Request) -> None:
        self.request = request
        self.gone = False
        self._on_gone: list[Callable[[], object]] = []
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: object) -> None:
        self.gone = True
        callbacks, self._on_gone = self._on_gone, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.failure("Cancelling the work of a request failed")

    def on_gone(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once if the client goes away before the answer."""
        if self.gone:
            callback()
        elif not self.request.finished:
            self._on_gone.append(callback)

    def send(self, body: bytes) -> None:
        if not self.gone and not self.request.finished:
            self.request.write(body)
            self.request.finish()

    def failed(self, failure: Failure) -> None:
        """The last errback: a 500 if nothing was sent yet, else a cut.

        Once the client is gone there is nobody to answer: a cancellation is
        what was asked for, anything else is logged.
        """
        if not self.gone:
            answer_failure(self.request, failure)
        elif not failure.check(CancelledError):
            log.failure(
                "Answering {method} failed after its client left",
                failure,
                method=_method(self.request),
            )
