"""The one resource of the upload site: PUT, GET, HEAD and OPTIONS on file URLs.

Cache-Control: caches may keep a file as long as it is served and no longer
(XEP-0363: a file MUST NOT be served after its ``expire-before``).  A file
that never expires gets a year and ``immutable``; one that expires gets
``max-age`` of the whole seconds left (never more) and ``must-revalidate``,
so no cache serves it stale.  Without a metadata store (some embeddings)
nothing says when a file stops being served: ``public, no-cache``, so caches
keep it but ask first each time (a 304 for its ETag).  304 and 416 carry the
same header.

Stored values written into headers (type, name, digest, time) are checked
as they go out: a type that is not printable ASCII is served as
``application/octet-stream`` (an attachment), and an unusable validator is
left out.  Anything unforeseen while answering ends in a 500, or a cut
connection once the response has begun: never a request left unanswered.

A PUT is answered by its owner (``httpupload.web.put``), reached through
``IStreamingRequest``.  A download whose client goes away is cancelled (as
klein does, from the ``notifyFinish`` errback): the record lookup is
dropped, and a file still being opened is closed as soon as it is open.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from httpupload.metadata import MetadataStore
from httpupload.metadata.cache import RecordCache
from httpupload.slots import parse_url_path
from httpupload.storage import FileInfo, Storage, StoredFile
from httpupload.web.conditional import (
    etag,
    has_digest,
    last_modified,
    not_modified,
    range_applies,
)
from httpupload.web.disposition import content_disposition, is_inline
from httpupload.web.interfaces import IStreamingRequest, IUploadDesk
from httpupload.web.put import answer_stored, spooled_put
from httpupload.web.ranges import Unsatisfiable, parse_range
from httpupload.web.responses import (
    ALLOWED_METHODS,
    Reply,
    apply_common_headers,
    plain,
)
from httpupload.web.resumable import options_headers
from httpupload.web.resumption import UploadResources, asks_upload_state
from httpupload.web.uploads import UploadReceiver, repr_digest

log = Logger()

YEAR = 31536000
CACHE_FOREVER = b"public, max-age=%d, immutable" % YEAR
CACHE_REVALIDATE = b"public, no-cache"
FALLBACK_CONTENT_TYPE = "application/octet-stream"


def cache_control(expires: float | None, now: float) -> bytes:
    """Cache-Control for a file served until ``expires`` (None: never expires)."""
    if expires is None:
        return CACHE_FOREVER
    left = expires - now
    seconds = int(min(left, YEAR)) if left > 0 else 0  # NaN: 0 as well
    return b"public, max-age=%d, immutable, must-revalidate" % seconds


def served_type(content_type: str) -> str:
    """The stored type if it can be a header value, else octet-stream."""
    if content_type.isascii() and content_type.isprintable() and content_type:
        return content_type
    return FALLBACK_CONTENT_TYPE


def _validators(request: Request, info: FileInfo, caching: bytes) -> None:
    tag = etag(info)
    if tag is not None:
        request.setHeader(b"ETag", tag)
    modified = last_modified(info)
    if modified is not None:
        request.setHeader(b"Last-Modified", modified)
    request.setHeader(b"Cache-Control", caching)


def _representation(request: Request, info: FileInfo, caching: bytes) -> None:
    _validators(request, info, caching)
    content_type = served_type(info.content_type)
    if content_type != info.content_type:
        log.warn(
            "Serving a file whose stored type cannot be a header as {fallback}",
            fallback=FALLBACK_CONTENT_TYPE,
        )
    request.setHeader(b"Content-Type", content_type.encode("ascii"))
    if has_digest(info):
        request.setHeader(b"Repr-Digest", repr_digest(info.sha256))
    request.setHeader(b"Accept-Ranges", b"bytes")
    request.setHeader(
        b"Content-Disposition",
        content_disposition(info.filename, is_inline(content_type)),
    )


def _close_quietly(opened: StoredFile | None) -> None:
    if opened is not None:
        opened.close()


def _cancellable_open(
    opening: Deferred[StoredFile | None],
) -> Deferred[StoredFile | None]:
    """``opening``, but cancellable at once: a file it opens later is closed.

    Storage gives no canceller (a thread cannot be stopped, and its result
    would be dropped with the open file in it), so the wait is what stops.
    """
    cancelled = False

    def cancel(_: Deferred[StoredFile | None]) -> None:
        nonlocal cancelled
        cancelled = True

    outer: Deferred[StoredFile | None] = Deferred(cancel)

    def arrived(result: StoredFile | Failure | None) -> None:
        if not cancelled:
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
        elif isinstance(result, Failure):
            log.info(
                "Opening a file for a client that left failed: {error}",
                error=result.getErrorMessage(),
            )
        else:
            _close_quietly(result)

    opening.addBoth(arrived).addErrback(
        lambda f: log.failure("Closing a file nobody wanted failed", f)
    )
    return outer


class UploadResource(Resource):
    """Serves every path: only the last two segments (id and name) count."""

    isLeaf = True

    def __init__(
        self,
        storage: Storage,
        metadata: MetadataStore | None = None,
        clock: IReactorTime | None = None,
        receiver: IUploadDesk | None = None,
        records: RecordCache | None = None,
    ) -> None:
        super().__init__()
        self._storage = storage
        # Used only when a host Site keeps its own request class (see
        # httpupload.embed): the body then arrives spooled by twisted.web.
        self._receiver = receiver
        # With a metadata store, a file is served only while its record says
        # so: an expired or deleted file answers 404 at once, before any sweep.
        self._metadata = metadata
        # Where the record is looked up: the cache, if there is one.
        self._records = records
        self._lookup = records if records is not None else metadata
        self._clock = clock
        # HEAD and DELETE about an upload (resumable uploads, "did my
        # upload land?"): with a receiver whose storage keeps partials.
        self._resources = (
            UploadResources(receiver) if isinstance(receiver, UploadReceiver) else None
        )
        self._partial_lifetime = (
            receiver.partial_lifetime if isinstance(receiver, UploadReceiver) else 0
        )

    def render(self, request: Request) -> bytes | int:
        apply_common_headers(request)
        method = request.method
        if method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"Allow", ALLOWED_METHODS)
            if self._resources is not None:
                for name, value in options_headers(self._partial_lifetime):
                    request.setHeader(name, value)
            return b""
        if method in (b"PUT", b"PATCH"):
            return self.render_PUT(request)
        if (
            method in (b"HEAD", b"DELETE")
            and self._resources is not None
            and asks_upload_state(request)
        ):
            self._resources.render(request)
            return NOT_DONE_YET
        if method in (b"GET", b"HEAD"):
            reply = Reply(request)
            download = ensureDeferred(self._download(request, reply))
            reply.on_gone(download.cancel)
            download.addErrback(reply.failed)
            return NOT_DONE_YET
        request.setHeader(b"Allow", ALLOWED_METHODS)
        return plain(request, 405, "Method not allowed")

    def render_PUT(self, request: Request) -> int | bytes:
        """Hand the PUT to its owner; or, on a host Site's request, copy it in."""
        streaming = IStreamingRequest(request, None)
        put = streaming.streamed_put() if streaming is not None else None
        if put is not None:
            put.respond(request)
            return NOT_DONE_YET
        if request.method != b"PUT":
            request.setHeader(b"Allow", ALLOWED_METHODS)
            return plain(request, 405, "Method not allowed")
        if self._receiver is None:
            log.error("PUT reached UploadResource with no way to take uploads")
            return plain(request, 500, "Uploads are not set up on this site")
        answer_stored(
            Reply(request), ensureDeferred(spooled_put(request, self._receiver))
        )
        return NOT_DONE_YET

    async def _open(self, request: Request) -> tuple[StoredFile, bytes] | None:
        """The file to serve and its Cache-Control, or None for a 404."""
        parsed = parse_url_path(request.path)
        if parsed is None:
            return None
        opening = _cancellable_open(self._storage.open_read(parsed[0]))
        if self._lookup is not None and self._clock is not None:
            # Both lookups at once: each is a hop to another thread.
            try:
                record = await self._lookup.get(parsed[0])
            except BaseException:
                # Failed, or cancelled: the file is closed once it is open
                # (now, if it is open already).
                opening.addCallback(_close_quietly)
                opening.addErrback(lambda f: None)
                opening.cancel()
                raise
            now = self._clock.seconds()
            served = record is not None and record.served_at(now)
            caching = cache_control(record.expires if record else None, now)
        else:
            served, caching = True, CACHE_REVALIDATE
        opened = await opening
        if opened is None:
            if self._records is not None:
                self._records.forget([parsed[0]])  # deleted, here or elsewhere
            return None
        if not served or opened.info.filename != parsed[1]:
            opened.close()
            return None
        return opened, caching

    async def _download(self, request: Request, response: Reply) -> None:
        try:
            found = await self._open(request)
        except CancelledError:
            raise  # the client left: Reply.failed expects this
        except Exception:
            log.failure("Opening a stored file failed")
            response.send(plain(request, 500, "Reading the file failed"))
            return
        if found is None:
            response.send(plain(request, 404, "Not found"))
            return
        opened, caching = found
        try:
            self._answer(request, response, opened, caching)
        except BaseException:
            # Closing a file already handed to its sender does nothing.
            opened.close()
            raise

    def _answer(
        self, request: Request, response: Reply, opened: StoredFile, caching: bytes
    ) -> None:
        info = opened.info
        if response.gone:
            opened.close()
            return
        if not_modified(request.requestHeaders, info):
            opened.close()
            _validators(request, info, caching)
            request.setResponseCode(304)
            request.finish()
            return
        wanted = None
        if range_applies(request.requestHeaders, info):
            try:
                wanted = parse_range(request.getHeader(b"Range"), info.size)
            except Unsatisfiable:
                opened.close()
                _validators(request, info, caching)
                request.setHeader(b"Content-Range", f"bytes */{info.size}".encode())
                response.send(plain(request, 416, "Range not satisfiable"))
                return
        _representation(request, info, caching)
        offset, length = 0, info.size
        if wanted is not None:
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", wanted.content_range(info.size))
            offset, length = wanted.start, wanted.length
        request.setHeader(b"Content-Length", str(length).encode("ascii"))
        if request.method == b"HEAD" or length == 0:
            opened.close()
            request.finish()
            return
        opened.send(request, offset, length)
