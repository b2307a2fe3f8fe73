"""How an upload URL answers, in the dialect the request speaks.

A PUT or append ends stored (``FileInfo``), kept for more (``Kept``) or
refused; an offset retrieval (HEAD) finds the upload complete, partial or
absent.  Each answer carries the upload resource's state the way its
protocol spells it (``httpupload.web.resumable``); a plain PUT is answered
as XEP-0363 clients expect, unchanged.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from httpupload.errors import HttpUploadError, OffsetMismatch
from httpupload.logs import short_id
from httpupload.storage import FileInfo
from httpupload.web.conditional import etag
from httpupload.web.incoming import Kept
from httpupload.web.responses import Reply, plain, refuse
from httpupload.web.resumable import (
    PLAIN,
    PROBLEM_JSON,
    Dialect,
    UploadState,
    append_status,
    mismatch_problem,
    state_headers,
)
from httpupload.web.uploads import repr_digest

log = Logger()


def set_state(
    request: Request, dialect: Dialect, state: UploadState, *, limits: bool = True
) -> None:
    """The upload resource's state, as headers of the request's dialect."""
    for name, value in state_headers(dialect, state, limits=limits):
        request.setHeader(name, value)


def no_content(request: Request, status: int = 204) -> bytes:
    """A response without content (204, or a bodiless 200)."""
    request.setResponseCode(status)
    if status != 204:
        request.setHeader(b"Content-Length", b"0")
    return b""


def set_digest(request: Request, info: FileInfo) -> None:
    tag = etag(info)
    if tag is not None:
        request.setHeader(b"Repr-Digest", repr_digest(info.sha256))
        request.setHeader(b"ETag", tag)


class UploadAnswer:
    """How one PUT or PATCH is answered once its body is in."""

    def __init__(
        self,
        dialect: Dialect = PLAIN,
        *,
        method: bytes = b"PUT",
        size: int = 0,
        location: bytes | None = None,
        max_age: int | None = None,
    ) -> None:
        self.dialect = dialect
        self.method = method
        self.size = size
        self.location = location
        self.max_age = max_age

    def stored(self, request: Request, info: FileInfo) -> bytes:
        log.info(
            "Stored {size} bytes as {file_id}",
            size=info.size,
            file_id=short_id(info.file_id),
        )
        set_digest(request, info)
        if not self.dialect.resumable:
            return plain(request, 201, "Created")
        set_state(request, self.dialect, UploadState(info.size, info.size, True))
        if self.dialect.tus:
            return no_content(request)
        return plain(request, 201, "Created")

    def kept(self, request: Request, kept: Kept) -> bytes:
        state = UploadState(kept.offset, self.size, False, self.max_age)
        set_state(request, self.dialect, state)
        if self.method != b"PATCH" and self.location is not None:
            request.setHeader(b"Location", self.location)
            return plain(request, 201, f"{kept.offset} bytes kept; append the rest")
        status = append_status(self.dialect)
        if status == 204:
            return no_content(request)
        return plain(request, status, f"{kept.offset} bytes kept")

    def refused(self, request: Request, error: HttpUploadError) -> bytes:
        if self.dialect.tus:
            request.setHeader(b"Tus-Resumable", b"1.0.0")
        if not isinstance(error, OffsetMismatch):
            return refuse(request, error)
        complete = error.expected == self.size and self.method == b"PATCH"
        state = UploadState(error.expected, self.size, complete, self.max_age)
        set_state(request, self.dialect, state)
        if self.dialect.ietf and self.dialect.version >= 8:
            body = mismatch_problem(error.expected, error.provided)
            request.setResponseCode(409)
            request.setHeader(b"Content-Type", PROBLEM_JSON)
            request.setHeader(b"Content-Length", b"%d" % len(body))
            return body
        return refuse(request, error)

    def send(self, reply: Reply, outcome: Deferred[FileInfo | Kept]) -> None:
        """Answer once ``outcome`` is known; ends the chain, logging what it meets."""
        request = reply.request

        def done(result: FileInfo | Kept) -> None:
            if isinstance(result, Kept):
                reply.send(self.kept(request, result))
            else:
                reply.send(self.stored(request, result))

        def not_done(failure: Failure) -> None:
            if isinstance(failure.value, HttpUploadError):
                reply.send(self.refused(request, failure.value))
                return
            log.failure("Storing an upload failed", failure)
            reply.send(plain(request, 500, "Storing the upload failed"))

        outcome.addCallbacks(done, not_done).addErrback(reply.failed)


__all__ = ["UploadAnswer", "no_content", "set_digest", "set_state"]
