"""A twisted.web request that streams a PUT body straight into storage.

twisted.web normally spools a request body into a temporary file of its own
before any resource sees it; for uploads that would be a second full copy.
``UploadChannel`` tells the request its method and path as soon as the
headers are in (they are only on the channel at that point), and
``UploadRequest.gotLength`` judges the PUT from its headers and opens the
storage write that ``handleContentChunk`` then feeds, chunk by chunk.
"""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from httpupload.errors import UploadRefused
from httpupload.storage import FileInfo
from httpupload.web.uploads import IncomingUpload, UploadReceiver

log = Logger()


class UploadRequest(Request):
    """A request whose PUT body goes to an ``IncomingUpload``, not to memory."""

    _early_method: bytes | None = None
    _early_path: bytes = b""
    _upload: IncomingUpload | None = None
    _refusal: UploadRefused | None = None

    def request_line_received(self, method: bytes, path: bytes) -> None:
        self._early_method = method
        self._early_path = path

    def gotLength(self, length: int | None) -> None:
        if self._early_method != b"PUT":
            super().gotLength(length)
            return
        # requestReceived() still calls tell() and seek() on content.
        self.content = io.BytesIO()  # type: ignore[assignment]
        site = getattr(self.channel, "site", None)
        receiver: UploadReceiver | None = getattr(site, "uploads", None)
        if receiver is None:
            self._refusal = UploadRefused("This site does not take uploads")
            return
        try:
            self._upload = receiver.start(self._early_path, self.requestHeaders, length)
        except UploadRefused as e:
            self._refusal = e

    def handleContentChunk(self, data: bytes) -> None:
        if self._early_method != b"PUT":
            super().handleContentChunk(data)
        elif self._upload is not None:
            self._upload.write(data)
        # A refused PUT's body is read and dropped.

    def finish_upload(self) -> Deferred[FileInfo]:
        """Commit the streamed body; fails with the reason it was refused."""
        if self._refusal is not None:
            return fail(self._refusal)
        if self._upload is None:
            return fail(UploadRefused("Not an upload"))
        return self._upload.finish()

    def connectionLost(self, reason: Failure) -> None:
        upload = self._upload
        if upload is not None and not upload.finished:
            log.info(
                "Upload cut off after {written} of {size} bytes; discarded",
                written=upload.bytes_received,
                size=upload.slot.size,
            )
            upload.abort().addErrback(
                lambda f: log.failure("Discarding a partial upload failed", f)
            )
        super().connectionLost(reason)


class UploadChannel(HTTPChannel):
    """Hands the method and path to the request before its body is read."""

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        if isinstance(request, UploadRequest):
            request.request_line_received(self._command, self._path)
        super().allHeadersReceived()


__all__ = ["UploadChannel", "UploadRequest"]
