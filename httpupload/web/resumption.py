"""Offset retrieval (HEAD) and cancellation (DELETE) of a slot's upload.

The slot's PUT URL is its upload resource, for tus 1.0 (a pre-created
upload: offset 0 on a fresh slot), the IETF draft and plain clients asking
"did my upload land?".  Each request first cuts off an upload of the same
slot still in flight (the draft's recommended answer to concurrency: the
client has given up on it), waits until what it wrote is kept, and only then
answers, so that the offset it gives is one the next append is accepted at.

Authorisation is the slot's token (header or query), judged over time: a
genuine token for this URL, unexpired, or expired while a partial upload is
kept for the slot (its record's ``slot_expires``, which keeping extends).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.server import Request

from httpupload.errors import (
    BadUploadRequest,
    HttpUploadError,
    InvalidSlot,
    ProtocolUnsupported,
    UploadGone,
)
from httpupload.logs import short_id
from httpupload.storage import FileInfo
from httpupload.web.responses import Reply, plain, refuse
from httpupload.web.resumable import (
    PLAIN,
    TUS_VERSION,
    Dialect,
    UnsupportedTus,
    UploadState,
    dialect_of,
    names_state,
    offset_status,
)
from httpupload.web.upload_answers import no_content, set_digest, set_state
from httpupload.web.uploads import UploadReceiver, bearer_token, query_token

log = Logger()


def asks_upload_state(request: Request) -> bool:
    """Whether a HEAD or DELETE is about the upload (it carries a slot token
    or speaks a resumable protocol) rather than the stored file."""
    headers = request.requestHeaders
    return (
        bearer_token(headers) is not None
        or query_token(request.uri) is not None
        or headers.hasHeader(b"Tus-Resumable")
        or headers.hasHeader(b"Upload-Draft-Interop-Version")
    )


@dataclass(frozen=True)
class Found:
    """Where a slot's upload stands: stored (``info``), partial, or absent."""

    state: UploadState
    info: FileInfo | None = None
    # Whether any byte of it is here (a partial upload, or the stored file).
    present: bool = True


class UploadResources:
    """Answers HEAD and DELETE on slot URLs, for the site's receiver."""

    def __init__(self, receiver: UploadReceiver) -> None:
        self._receiver = receiver

    async def find(self, path: bytes, request: Request) -> Found:
        """Where the upload of the slot ``path`` names stands; UploadRefused if
        the request may not ask."""
        receiver = self._receiver
        slot, expired = receiver.authorise(path, request.requestHeaders)
        older = receiver.interrupt(slot.file_id)
        if older is not None:
            await older.outcome()
        record = await receiver.lookup(slot)
        now = receiver.clock.seconds()
        if record is None or record.completed:
            info = await receiver.storage.stat(slot.file_id)
            if info is not None:
                return Found(UploadState(info.size, info.size, True), info)
        until = (
            slot.expires if record is None else max(slot.expires, record.slot_expires)
        )
        if expired and now >= until:
            raise InvalidSlot("The slot has expired")
        max_age = int(until - now)
        partials = receiver.partials
        kept = None if partials is None else await partials.partial_size(slot.file_id)
        state = UploadState(kept or 0, slot.size, False, max_age)
        return Found(state, present=kept is not None)

    async def cancel(self, path: bytes, request: Request) -> None:
        """Throw a slot's partial upload away; UploadGone if there is none."""
        receiver = self._receiver
        slot, _ = receiver.authorise(path, request.requestHeaders)
        found = await self.find(path, request)
        partials = receiver.partials
        if found.info is not None or partials is None:
            raise UploadGone("No upload in progress here")
        if not await partials.discard_partial(slot.file_id):
            raise UploadGone("No upload in progress here")
        log.info("Cancelled the partial upload of {id}", id=short_id(slot.file_id))

    def render(self, request: Request) -> None:
        """Answer a HEAD or DELETE about an upload (``asks_upload_state``)."""
        reply = Reply(request)
        try:
            dialect = dialect_of(request.requestHeaders)
        except UnsupportedTus:
            request.setHeader(b"Tus-Version", TUS_VERSION)
            unsupported = ProtocolUnsupported("Only tus 1.0.0 is spoken here")
            reply.send(refuse(request, unsupported))
            return
        request.setHeader(b"Cache-Control", b"no-store")
        if dialect.tus:
            request.setHeader(b"Tus-Resumable", TUS_VERSION)
        if names_state(dialect, request.requestHeaders):
            refusal = BadUploadRequest(
                "Upload-Offset and completeness are not sent with HEAD or DELETE"
            )
            reply.send(self._refused(request, dialect, refusal))
            return
        if request.method == b"DELETE":
            work: Deferred[None] = ensureDeferred(self._delete(request, reply, dialect))
        else:
            work = ensureDeferred(self._head(request, reply, dialect))
        reply.on_gone(work.cancel)
        work.addErrback(reply.failed)

    async def _head(self, request: Request, reply: Reply, dialect: Dialect) -> None:
        try:
            found = await self.find(request.uri, request)
        except HttpUploadError as e:
            reply.send(self._refused(request, dialect, e))
            return
        set_state(request, dialect, found.state)
        if found.info is not None:
            set_digest(request, found.info)
        if not found.present and dialect == PLAIN:
            request.setResponseCode(404)
            reply.send(b"")
            return
        reply.send(no_content(request, offset_status(dialect, True)))

    async def _delete(self, request: Request, reply: Reply, dialect: Dialect) -> None:
        try:
            await self.cancel(request.uri, request)
        except HttpUploadError as e:
            reply.send(self._refused(request, dialect, e))
            return
        reply.send(no_content(request))

    @staticmethod
    def _refused(request: Request, dialect: Dialect, error: HttpUploadError) -> bytes:
        if isinstance(error, InvalidSlot) and dialect.resumable:
            # The draft: an upload resource that is not active is a 404.
            return plain(request, 404, str(error))
        return refuse(request, error)


__all__ = ["Found", "UploadResources", "asks_upload_state"]
