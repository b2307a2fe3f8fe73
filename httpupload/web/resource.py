"""The one resource of the upload site: PUT, GET, HEAD and OPTIONS on file URLs."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from httpupload.errors import HttpUploadError
from httpupload.metadata import MetadataStore
from httpupload.slots import parse_url_path
from httpupload.storage import FileInfo, Storage, StoredFile
from httpupload.web.conditional import etag, last_modified, not_modified, range_applies
from httpupload.web.disposition import content_disposition, is_inline
from httpupload.web.ranges import Unsatisfiable, parse_range
from httpupload.web.responses import (
    ALLOWED_METHODS,
    apply_common_headers,
    plain,
    refuse,
)
from httpupload.web.uploads import UploadReceiver, repr_digest

log = Logger()

CACHE_CONTROL = b"public, max-age=31536000, immutable"
# Copying a body that twisted.web spooled (the embedding case).
CHUNK_SIZE = 256 * 1024


def _validators(request: Request, info: FileInfo) -> None:
    request.setHeader(b"ETag", etag(info))
    request.setHeader(b"Last-Modified", last_modified(info))
    request.setHeader(b"Cache-Control", CACHE_CONTROL)


def _representation(request: Request, info: FileInfo) -> None:
    _validators(request, info)
    request.setHeader(b"Content-Type", info.content_type.encode("latin-1"))
    request.setHeader(b"Repr-Digest", repr_digest(info.sha256))
    request.setHeader(b"Accept-Ranges", b"bytes")
    request.setHeader(
        b"Content-Disposition",
        content_disposition(info.filename, is_inline(info.content_type)),
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
        if not self.gone:
            self.request.write(body)
            self.request.finish()


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
            ensureDeferred(self._download(request, _Response(request)))
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

        ensureDeferred(self._upload(request, _Response(request), finish_upload))
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
            "Stored {size} bytes as {file_id:.6}…", size=info.size, file_id=info.file_id
        )
        request.setHeader(b"Repr-Digest", repr_digest(info.sha256))
        request.setHeader(b"ETag", etag(info))
        response.send(plain(request, 201, "Created"))

    async def _open(self, request: Request) -> StoredFile | None:
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
            served = record is not None and record.served_at(self._clock.seconds())
        else:
            served = True
        opened = await opening
        if opened is not None and (not served or opened.info.filename != parsed[1]):
            opened.close()
            return None
        return opened

    async def _download(self, request: Request, response: _Response) -> None:
        try:
            opened = await self._open(request)
        except Exception:
            log.failure("Opening a stored file failed")
            response.send(plain(request, 500, "Reading the file failed"))
            return
        if opened is None:
            response.send(plain(request, 404, "Not found"))
            return
        info = opened.info
        if response.gone:
            opened.close()
            return
        if not_modified(request.requestHeaders, info):
            opened.close()
            _validators(request, info)
            request.setResponseCode(304)
            request.finish()
            return
        wanted = None
        if range_applies(request.requestHeaders, info):
            try:
                wanted = parse_range(request.getHeader(b"Range"), info.size)
            except Unsatisfiable:
                opened.close()
                _validators(request, info)
                request.setHeader(b"Content-Range", f"bytes */{info.size}".encode())
                response.send(plain(request, 416, "Range not satisfiable"))
                return
        _representation(request, info)
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
