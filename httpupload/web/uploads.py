"""Judging a PUT from its headers, and receiving its body into storage.

A PUT is checked before any byte of its body is stored: the slot token, the
URL it was minted for, its expiry (judged now, when the PUT starts, so a long
upload that began in time completes), the Content-Length and Content-Type.
"""

from __future__ import annotations

import base64
import hashlib

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from httpupload.errors import (
    BadSlotRequest,
    IncompleteBody,
    InvalidSlot,
    LengthMismatch,
    LengthRequired,
    TypeMismatch,
)
from httpupload.slots import (
    Slot,
    SlotSigner,
    check_content_type,
    media_type,
    parse_url_path,
)
from httpupload.storage import FileInfo, PendingUpload, Storage

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def bearer_token(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    values = headers.getRawHeaders(b"Authorization") or []
    for value in values:
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            try:
                return token.strip().decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def repr_digest(sha256_hex: str) -> bytes:
    """An RFC 9530 ``Repr-Digest`` value for a SHA-256 given in hex."""
    encoded = base64.b64encode(bytes.fromhex(sha256_hex))
    return b"sha-256=:" + encoded + b":"


def _stored_type(slot: Slot, header: bytes | None) -> str:
    """The type to store: the slot's, else the PUT's, else octet-stream."""
    if header is None:
        return slot.content_type or DEFAULT_CONTENT_TYPE
    try:
        given = check_content_type(header.decode("latin-1"))
    except BadSlotRequest:
        raise TypeMismatch("Content-Type is not a valid media type") from None
    if slot.content_type is None:
        return given or DEFAULT_CONTENT_TYPE
    if given is None or media_type(given) != media_type(slot.content_type):
        raise TypeMismatch(
            f"Content-Type must be {media_type(slot.content_type)}, "
            "as requested for the slot"
        )
    return slot.content_type


class IncomingUpload:
    """The body of one accepted PUT, hashed and written as it arrives."""

    def __init__(
        self, slot: Slot, content_type: str, pending: PendingUpload, clock: IReactorTime
    ) -> None:
        self.slot = slot
        self.content_type = content_type
        self._pending = pending
        self._clock = clock
        self._sha256 = hashlib.sha256()
        self.finished = False
        # Counted here, not by storage: a write that failed (full disk) must
        # be reported as such on commit, not as a short body.
        self.bytes_received = 0

    def write(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self._sha256.update(data)
        self._pending.write(data)

    def finish(self) -> Deferred[FileInfo]:
        """Commit if the whole body arrived; the Deferred fails otherwise."""
        self.finished = True
        if self.bytes_received != self.slot.size:
            d = self._pending.abort()
            written = self.bytes_received

            def incomplete(_: object) -> FileInfo:
                raise IncompleteBody(
                    f"Body has {written} bytes, the slot is for {self.slot.size}"
                )

            return d.addCallback(incomplete)
        info = FileInfo(
            file_id=self.slot.file_id,
            filename=self.slot.filename,
            size=self.slot.size,
            content_type=self.content_type,
            sha256=self._sha256.hexdigest(),
            created=self._clock.seconds(),
        )
        return self._pending.commit(info).addCallback(lambda _: info)

    def abort(self) -> Deferred[None]:
        self.finished = True
        return self._pending.abort()


class UploadReceiver:
    """Checks PUTs against their slots and starts their writes to storage."""

    def __init__(
        self, signer: SlotSigner, storage: Storage, clock: IReactorTime
    ) -> None:
        self._signer = signer
        self._storage = storage
        self._clock = clock

    def check(
        self, path: bytes, headers: Headers, length: int | None
    ) -> tuple[Slot, str]:
        """The slot and content type of an acceptable PUT; raises UploadRefused."""
        parsed = parse_url_path(path)
        if parsed is None:
            raise InvalidSlot("Not an upload URL")
        token = bearer_token(headers)
        if token is None:
            raise InvalidSlot("Missing slot token (Authorization: Bearer …)")
        slot = self._signer.verify(token, *parsed)
        if length is None:
            raise LengthRequired("Content-Length is required")
        if length != slot.size:
            raise LengthMismatch(
                f"Content-Length is {length}, the slot is for {slot.size} bytes"
            )
        content_types = headers.getRawHeaders(b"Content-Type")
        return slot, _stored_type(slot, content_types[0] if content_types else None)

    def start(
        self, path: bytes, headers: Headers, length: int | None
    ) -> IncomingUpload:
        slot, content_type = self.check(path, headers, length)
        pending = self._storage.begin_write(slot.file_id)
        return IncomingUpload(slot, content_type, pending, self._clock)
