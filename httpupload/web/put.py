"""The one owner of a PUT: from its head to its 201 (or why not) and its record.

``StreamedPut`` is made by the request as soon as the head is in (see
``httpupload.web.request``).  It asks the site's ``IUploadDesk`` whether the
PUT is acceptable (a refusal is then answered from the head, before any
body), feeds it the body chunk by chunk (holding the connection back while
storage catches up), watches the body's rate, and once the body is in,
commits, records and answers.  The resource only hands it the request.

When the client goes away: a body cut short is thrown away (its partial
file aborted); a body that arrived whole is committed and recorded all the
same, its answer dropped: that is how an upload lands while its client saw
an error, and a retry of the same bytes is then answered 201 (see
``UploadReceiver._adopt_stored``).

``spooled_put`` is the fallback for a host ``Site`` with its own request
class (``httpupload.embed``): twisted.web spooled the body, which is then
copied into storage.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from httpupload.errors import (
    HttpUploadError,
    ProtocolUnsupported,
    StorageError,
    UploadRefused,
)
from httpupload.logs import short_id
from httpupload.storage import FileInfo
from httpupload.web.addresses import client_address, via_proxy
from httpupload.web.conditional import etag
from httpupload.web.incoming import IncomingUpload
from httpupload.web.interfaces import IPut, IPutConnection, IUploadDesk
from httpupload.web.responses import Reply, plain, refuse
from httpupload.web.resumable import (
    PLAIN,
    Dialect,
    UnsupportedTus,
    UploadState,
    dialect_of,
    interim_head,
)
from httpupload.web.settings import WebSettings
from httpupload.web.upload_answers import UploadAnswer
from httpupload.web.uploads import bearer_token, query_token, repr_digest

# Copying a body that twisted.web spooled (the embedding case).
CHUNK_SIZE = 256 * 1024

log = Logger()


def _log_abort_failure(failure: Failure) -> None:
    log.failure("Discarding a partial upload failed", failure)


def answer_stored(reply: Reply, stored: Deferred[FileInfo]) -> None:
    """Answer a PUT once its body is stored: 201, the refusal, or a 500.

    Ends the chain: nothing it meets is dropped unlogged.
    """
    request = reply.request

    def created(info: FileInfo) -> None:
        log.info(
            "Stored {size} bytes as {file_id}",
            size=info.size,
            file_id=short_id(info.file_id),
        )
        tag = etag(info)
        if tag is not None:
            request.setHeader(b"Repr-Digest", repr_digest(info.sha256))
            request.setHeader(b"ETag", tag)
        reply.send(plain(request, 201, "Created"))

    def not_stored(failure: Failure) -> None:
        if isinstance(failure.value, HttpUploadError):
            reply.send(refuse(request, failure.value))
            return
        log.failure("Storing an upload failed", failure)
        reply.send(plain(request, 500, "Storing the upload failed"))

    stored.addCallbacks(created, not_stored).addErrback(reply.failed)


def upload_location(path: bytes, token: str | None) -> bytes:
    """The upload resource's URL, relative to the request's own: its last
    segment, with the token.

    A relative reference resolves against the URL the client used, so it
    stays right behind a proxy that adds or strips a path prefix.  It is as
    unguessable as the token (it carries it) and never logged (the access
    log leaves queries out).
    """
    target, _, query = path.partition(b"?")
    last = target.rsplit(b"/", 1)[-1]
    if query_token(path) is not None:
        return last + b"?" + query
    return last + b"?token=" + quote(token or "", safe="").encode("ascii")


@implementer(IPut)
class StreamedPut:
    """A PUT on our channel, judged from its head, its body streamed to storage."""

    def __init__(
        self,
        request: Request,
        connection: IPutConnection,
        desk: IUploadDesk | None,
        settings: WebSettings,
        clock: IReactorTime | None,
        path: bytes,
        length: int | None,
        method: bytes = b"PUT",
        version: bytes = b"HTTP/1.1",
    ) -> None:
        self._connection = connection
        self._answer = UploadAnswer(method=method)
        self._desk = desk
        self._settings = settings
        self._clock = clock
        self._refusal: HttpUploadError | None = None
        self._upload: IncomingUpload | None = None
        self._rate_timer: IDelayedCall | None = None
        self._window_start = 0
        self._held_back = False
        if desk is None:
            self._refusal = UploadRefused("This site does not take uploads")
            return
        address = client_address(request, settings.trusted_proxies)
        headers = request.requestHeaders
        try:
            dialect = dialect_of(headers)
        except UnsupportedTus:
            dialect = PLAIN
            self._refusal = ProtocolUnsupported("Only tus 1.0.0 is spoken here")
            return
        try:
            upload = desk.start(
                path, headers, length, address, connection.cut_off, method, dialect
            )
        except (UploadRefused, StorageError) as e:
            self._answer = UploadAnswer(dialect, method=method)
            self._refusal = e
            return
        self._upload = upload
        location = upload_location(path, bearer_token(headers))
        self._answer = UploadAnswer(
            dialect,
            method=method,
            size=upload.slot.size,
            location=location if dialect.ietf else None,
            max_age=settings.partial_lifetime,
        )
        if method == b"PUT":
            desk.remember_type(upload.slot.file_id, upload.content_type)
        if self._interim_allowed(request, dialect, method, version):
            state = UploadState(0, upload.slot.size, False, settings.partial_lifetime)
            connection.interim(interim_head(dialect, location, state))
        connection.keep_until_closed(upload)
        request.notifyFinish().addBoth(self._answered).addErrback(
            lambda f: log.failure("Releasing an upload failed", f)
        )
        self._schedule_rate_check()

    def _interim_allowed(
        self, request: Request, dialect: Dialect, method: bytes, version: bytes
    ) -> bool:
        """Whether a 104 goes out: a draft creation over HTTP/1.1, if the
        setting lets it reach this client (nginx 1.22 mishandles upstream
        1xx other than 100 and 103: docs/resumable.md)."""
        if not dialect.ietf or method != b"PUT" or version != b"HTTP/1.1":
            return False
        upload = self._upload
        if upload is None or self.refused():
            return False
        mode = self._settings.interim_104
        if mode == "never":
            return False
        if mode == "direct" and via_proxy(request, self._settings.trusted_proxies):
            return False
        return True

    def refused(self) -> bool:
        return self._refusal is not None

    # -- the body --------------------------------------------------------------

    def body_received(self, data: bytes) -> None:
        if self._upload is not None:
            ready = self._upload.write(data)
            if ready is not None:
                self._hold_body(ready)
        # A refused PUT's body is read and dropped.

    def _hold_body(self, ready: Deferred[None]) -> None:
        """Stop reading the body until storage has caught up (an object store).

        The connection's idle timer stops too: the wait is ours, not the
        client's.  A wait after the last byte needs no pause (commit waits).
        """
        upload = self._upload
        if (
            self._held_back
            or upload is None
            or upload.bytes_received >= upload.slot.size
        ):
            return
        resume = self._connection.hold_body()
        if resume is None:
            return
        self._held_back = True

        def go_on(_: object) -> None:
            self._held_back = False
            # Time spent waiting on storage is not the client's slowness.
            self._window_start = upload.bytes_received
            if not upload.finished:
                resume()

        ready.addBoth(go_on).addErrback(
            lambda f: log.failure("Reading an upload's body again failed", f)
        )

    def _schedule_rate_check(self) -> None:
        rate = self._settings.min_upload_rate
        window = self._settings.idle_timeout
        if rate and window and self._upload is not None and self._clock is not None:
            self._window_start = self._upload.bytes_received
            self._rate_timer = self._clock.callLater(window, self._check_rate)

    def _check_rate(self) -> None:
        self._rate_timer = None
        upload = self._upload
        if upload is None or upload.finished:
            return
        rate, window = self._settings.min_upload_rate, self._settings.idle_timeout
        moved = upload.bytes_received - self._window_start
        if moved < rate * window and not self._held_back:
            log.info(
                "Cutting off an upload slower than {rate} B/s ({moved} bytes in "
                "{window:.0f} s)",
                rate=rate,
                moved=moved,
                window=window,
            )
            self._connection.cut_off()
            return
        self._schedule_rate_check()

    def _stop_rate_check(self) -> None:
        if self._rate_timer is not None and self._rate_timer.active():
            self._rate_timer.cancel()
        self._rate_timer = None

    # -- the answer ------------------------------------------------------------

    def respond(self, request: Request) -> None:
        """The body is in: commit (unless refused), record, answer."""
        self._stop_rate_check()
        reply = Reply(request)
        if self._refusal is not None:
            reply.send(self._answer.refused(request, self._refusal))
            return
        if self._upload is None:  # pragma: no cover (refused without a reason)
            reply.send(plain(request, 500, "Storing the upload failed"))
            return
        # Not cancelled when the client goes: a whole body is kept.
        self._answer.send(reply, self._upload.finish())

    def _answered(self, _: object) -> None:
        """The response is written (or the client gone): release the upload.

        While draining, the connection is closed first and the upload released
        only when it is gone, so the answer is flushed before the process exits.
        """
        upload = self._upload
        if upload is None:
            return
        if self._desk is not None and self._desk.draining:
            if self._connection.close_before_release():
                return
        upload.release()

    def connection_lost(self) -> None:
        self._stop_rate_check()
        upload = self._upload
        if upload is not None and not upload.finished:
            log.info(
                "Upload cut off at {received} of {size} bytes",
                received=upload.reached,
                size=upload.slot.size,
            )
            upload.interrupted().addErrback(_log_abort_failure)


async def spooled_put(request: Request, desk: IUploadDesk) -> FileInfo:
    """A PUT whose body twisted.web already spooled: copy it into storage.

    Works with any request class, without our two guarantees: the body
    was stored once already, and a refusal comes only after all of it.
    """
    content = request.content
    length = content.seek(0, 2) if content is not None else 0
    if content is not None:
        content.seek(0)
    headers = request.requestHeaders
    if not headers.hasHeader(b"Content-Length"):
        headers.setRawHeaders(b"Content-Length", [str(length).encode()])
    address = getattr(request.getClientAddress(), "host", "unknown")
    upload = desk.start(request.uri, headers, length, address)
    try:
        while content is not None and (chunk := content.read(CHUNK_SIZE)):
            ready = upload.write(chunk)
            if ready is not None:
                await ready
        stored = await upload.finish()
        if not isinstance(stored, FileInfo):  # pragma: no cover (a whole PUT)
            raise UploadRefused("The upload was not stored")
        return stored
    finally:
        upload.release()


__all__ = ["StreamedPut", "answer_stored", "spooled_put"]
