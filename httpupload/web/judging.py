"""Judging a PUT or an append from its head: the slot's token, its lengths, its type.

The slot token comes from the ``Authorization`` header or the URL's
``token`` query parameter; it must be genuine and for this URL.  Its own
lifetime (judged when a PUT starts, so a long upload that began in time
completes) may be over for a slot with a partial upload kept: the receiver
then decides from the slot's record.  A plain PUT must carry the slot's
size as its Content-Length; an append (PATCH, in tus or the resumable
upload draft) must name its offset and stay within the slot's size; the
Content-Type must be the slot's.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import parse_qs

from twisted.web.http_headers import Headers

from httpupload.errors import (
    BadSlotRequest,
    BadUploadRequest,
    InvalidSlot,
    LengthMismatch,
    LengthRequired,
    TooLarge,
    TypeMismatch,
    WrongPatchType,
)
from httpupload.slots import (
    TOKEN_PARAMETER,
    Slot,
    SlotSigner,
    check_content_type,
    media_type,
    parse_url_path,
)
from httpupload.web.resumable import (
    PLAIN,
    Dialect,
    requested_complete,
    requested_length,
    requested_offset,
)

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def bearer_token(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    for value in headers.getRawHeaders(b"Authorization") or []:
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            try:
                return token.strip().decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def query_token(path: bytes) -> str | None:
    """The ``token`` query parameter, for clients that cannot send slot headers."""
    _, sep, query = path.partition(b"?")
    if not sep:
        return None
    try:
        values = parse_qs(query.decode("ascii"), strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    found = values.get(TOKEN_PARAMETER)
    return found[0] if found else None


def repr_digest(sha256_hex: str) -> bytes:
    """An RFC 9530 ``Repr-Digest`` value for a SHA-256 given in hex."""
    encoded = base64.b64encode(bytes.fromhex(sha256_hex))
    return b"sha-256=:" + encoded + b":"


def sent_digest(headers: Headers) -> str | None:
    """The SHA-256 (hex) of a request's ``Repr-Digest``, if it gives one."""
    for value in headers.getRawHeaders(b"Repr-Digest") or []:
        for member in value.split(b","):
            name, _, encoded = member.strip().partition(b"=")
            if name.strip().lower() != b"sha-256":
                continue
            encoded = encoded.strip()
            if len(encoded) < 2 or encoded[:1] != b":" or encoded[-1:] != b":":
                return None
            try:
                raw = base64.b64decode(encoded[1:-1], validate=True)
            except ValueError:
                return None
            return raw.hex() if len(raw) == 32 else None
    return None


@dataclass(frozen=True)
class Judged:
    """What the head of an acceptable PUT or PATCH says of it."""

    slot: Slot
    content_type: str
    # The token's own lifetime is over: only a partial upload kept for the
    # slot (its record's ``slot_expires``, extended) still authorises it.
    expired: bool = False
    offset: int = 0
    # As ``IncomingUpload.complete``.
    complete: bool | None = True
    # The body's length, if the head says.
    length: int | None = None


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


class PutJudge:
    """Judges the heads of PUTs and appends against their slots."""

    def __init__(
        self, signer: SlotSigner, keeps_partials: bool, types: dict[str, str]
    ) -> None:
        """``keeps_partials``: expired tokens may still resume; ``types``:
        the type each resumable PUT gave, for its appends."""
        self._signer = signer
        self._keeps_partials = keeps_partials
        self._types = types

    def authorise(self, path: bytes, headers: Headers) -> tuple[Slot, bool]:
        """The slot a request's token is for, and whether the token expired.

        An expired token is good only while the slot has a partial upload
        (``resumable`` then decides, from the record); without a storage
        that keeps partials, expiry refuses at once, as before.
        """
        parsed = parse_url_path(path)
        if parsed is None:
            raise InvalidSlot("Not an upload URL")
        tokens = [t for t in (bearer_token(headers), query_token(path)) if t]
        if not tokens:
            raise InvalidSlot(
                "Missing slot token (Authorization: Bearer … or ?token=…)"
            )
        refusal: InvalidSlot | None = None
        for token in tokens:
            try:
                slot = self._signer.decode(token)
            except InvalidSlot as e:
                refusal = refusal or e
                continue
            if (slot.file_id, slot.filename) != parsed:
                refusal = refusal or InvalidSlot("The slot is for another URL")
                continue
            expired = self._signer.clock.seconds() >= slot.expires
            if expired and not self._keeps_partials:
                refusal = refusal or InvalidSlot("The slot has expired")
                continue
            return slot, expired
        assert refusal is not None
        raise refusal

    def judge(
        self,
        path: bytes,
        headers: Headers,
        length: int | None,
        method: bytes = b"PUT",
        dialect: Dialect = PLAIN,
    ) -> Judged:
        """What an acceptable PUT or PATCH is; raises UploadRefused."""
        slot, expired = self.authorise(path, headers)
        given_length = requested_length(dialect, headers)
        if given_length is not None and given_length != slot.size:
            raise LengthMismatch(
                f"Upload-Length is {given_length}, the slot is for {slot.size} bytes"
            )
        if length is not None and not headers.hasHeader(b"Content-Length"):
            length = None
        if method == b"PATCH":
            return self._judge_append(slot, expired, headers, length, dialect)
        complete = requested_complete(dialect, headers) if dialect.ietf else None
        content_types = headers.getRawHeaders(b"Content-Type")
        content_type = _stored_type(slot, content_types[0] if content_types else None)
        if complete is False and self._keeps_partials:
            # The draft's creation with more to follow: up to the slot's size.
            if length is not None and length > slot.size:
                raise TooLarge(f"The slot is for {slot.size} bytes")
            return Judged(slot, content_type, expired, 0, False, length)
        if length is None:
            raise LengthRequired("Content-Length is required")
        if length != slot.size:
            raise LengthMismatch(
                f"Content-Length is {length}, the slot is for {slot.size} bytes"
            )
        return Judged(slot, content_type, expired, 0, True, length)

    def _judge_append(
        self,
        slot: Slot,
        expired: bool,
        headers: Headers,
        length: int | None,
        dialect: Dialect,
    ) -> Judged:
        if not self._keeps_partials or not dialect.resumable:
            raise BadUploadRequest(
                "A PATCH appends with tus 1.0 (Tus-Resumable) or the resumable "
                "upload draft (Upload-Draft-Interop-Version)"
            )
        if not dialect.patch_type_ok(headers.getRawHeaders(b"Content-Type", [None])[0]):
            wanted = (
                "application/offset+octet-stream"
                if dialect.tus
                else "application/partial-upload"
            )
            raise WrongPatchType(f"A PATCH here must be {wanted}")
        offset = requested_offset(dialect, headers)
        if offset is None:
            raise BadUploadRequest("Upload-Offset is required")
        complete = requested_complete(dialect, headers)
        if length is not None:
            if offset + length > slot.size:
                raise TooLarge(
                    f"{length} bytes at {offset} would pass the slot's "
                    f"{slot.size} bytes"
                )
            if complete is True and offset + length != slot.size:
                raise LengthMismatch(
                    f"{length} bytes at {offset} do not end the slot's "
                    f"{slot.size} bytes"
                )
        content_type = self._types.get(slot.file_id) or (
            slot.content_type or DEFAULT_CONTENT_TYPE
        )
        return Judged(slot, content_type, expired, offset, complete, length)


__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "Judged",
    "PutJudge",
    "bearer_token",
    "query_token",
    "repr_digest",
    "sent_digest",
]
