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
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from httpupload.errors import HttpUploadError
from httpupload.logs import short_id
from httpupload.metadata import MetadataStore
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
from httpupload.web.ranges import Unsatisfiable, parse_range
from httpupload.web.responses import (
    ALLOWED_METHODS,
    answer_failure,
    apply_common_headers,
    plain,
    refuse,
)
from httpupload.web.uploads import UploadReceiver, repr_digest

log = Logger()

YEAR = 31536000
CACHE_FOREVER = b"public, max-age=%d, immutable" % YEAR
CACHE_REVALIDATE = b"public, no-cache"
FALLBACK_CONTENT_TYPE = "application/octet-stream"
# Copying a body that twisted.web spooled (the embedding case).
CHUNK_SIZE = 256 * 1024


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


class _Response:
    """Finishes a request unless its client has gone away meanwhile."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.gone = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: object) -> None:
        self.gone = True

    def send(self, body: bytes) -> None:
        if not self.gone and not self.request.finished:
            self.request.write(body)
            self.request.finish()

    def failed(self, failure: Failure) -> None:
        """Anything unforeseen: a 500 if nothing was sent yet, else a cut."""
        if not self.gone:
            answer_failure(self.request, failure)


class UploadResource(Resource):
    """Serves every path: only the last two segments (id and name) count."""

    isLeaf = True

    def __init__(
        self,
        storage: Storage,
        metadata: MetadataStore | None = None,
        clock: IReactorTime | None = None,
        receiver: UploadReceiver | None = None,
    ) -> None:
        super().__init__()
        self._storage = storage
        # Used only when a host Site keeps its own request class (see
        # httpupload.embed): the body then arrives spooled by twisted.web.
        self._receiver = receiver
        # With a metadata store, a file is served only while its record says
        # so: an expired or deleted file answers 404 at once, before any sweep.
        self._metadata = metadata
        self._clock = clock

    def render(self, request: Request) -> bytes | int:
        apply_common_headers(request)
        method = request.method
        if method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"Allow", ALLOWED_METHODS)
            return b""
        if method == b"PUT":
            return self.render_PUT(request)
        if method in (b"GET", b"HEAD"):
            response = _Response(request)
            ensureDeferred(self._download(request, response)).addErrback(
                response.failed
            )
            return NOT_DONE_YET
        request.setHeader(b"Allow", ALLOWED_METHODS)
        return plain(request, 405, "Method not allowed")

    def render_PUT(self, request: Request) -> int | bytes:
        finish_upload = getattr(request, "finish_upload", None)
        if finish_upload is None:
            if self._receiver is None:
                log.error("PUT reached UploadResource with no way to take uploads")
                return plain(request, 500, "Uploads are not set up on this site")
            receiver = self._receiver

            def finish_upload() -> Deferred[FileInfo]:
                return ensureDeferred(self._spooled_upload(request, receiver))

        response = _Response(request)
        ensureDeferred(self._upload(request, response, finish_upload)).addErrback(
            response.failed
        )
        return NOT_DONE_YET

    async def _spooled_upload(
        self, request: Request, receiver: UploadReceiver
    ) -> FileInfo:
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
        upload = receiver.start(request.uri, headers, length, address)
        try:
            while content is not None and (chunk := content.read(CHUNK_SIZE)):
                ready = upload.write(chunk)
                if ready is not None:
                    await ready
            return await upload.finish()
        finally:
            upload.release()

    async def _upload(
        self,
        request: Request,
        response: _Response,
        finish_upload: Callable[[], Deferred[FileInfo]],
    ) -> None:
        try:
            info = await finish_upload()
        except HttpUploadError as e:
            response.send(refuse(request, e))
            return
        except Exception:
            log.failure("Storing an upload failed")
            response.send(plain(request, 500, "Storing the upload failed"))
            return
        log.info(
            "Stored {size} bytes as {file_id}",
            size=info.size,
            file_id=short_id(info.file_id),
        )
        tag = etag(info)
        if tag is not None:
            request.setHeader(b"Repr-Digest", repr_digest(info.sha256))
            request.setHeader(b"ETag", tag)
        response.send(plain(request, 201, "Created"))

    async def _open(self, request: Request) -> tuple[StoredFile, bytes] | None:
        """The file to serve and its Cache-Control, or None for a 404."""
        parsed = parse_url_path(request.path)
        if parsed is None:
            return None
        opening = self._storage.open_read(parsed[0])
        if self._metadata is not None and self._clock is not None:
            # Both lookups at once: each is a hop to another thread.
            try:
                record = await self._metadata.get(parsed[0])
            except BaseException:
                opening.addCallback(_close_quietly)
                opening.addErrback(lambda f: None)
                raise
            now = self._clock.seconds()
            served = record is not None and record.served_at(now)
            caching = cache_control(record.expires if record else None, now)
        else:
            served, caching = True, CACHE_REVALIDATE
        opened = await opening
        if opened is None:
            return None
        if not served or opened.info.filename != parsed[1]:
            opened.close()
            return None
        return opened, caching

    async def _download(self, request: Request, response: _Response) -> None:
        try:
            found = await self._open(request)
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
        self, request: Request, response: _Response, opened: StoredFile, caching: bytes
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
