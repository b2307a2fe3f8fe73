"""Judging a PUT from its headers, and receiving its body into storage.

A PUT is checked before any byte of its body is stored: the slot token (from
the ``Authorization`` header or the URL's ``token`` query parameter), the URL
it was minted for, its expiry (judged now, when the PUT starts, so a long
upload that began in time completes), the Content-Length and Content-Type.
The receiver also keeps the uploads in flight: to bound them per client
address, to drain them before the process stops, and to keep one per slot
(a new PUT of a slot cuts off the older one and waits until its partial file
is gone, so nothing is ever written twice for one slot).  A body goes to
storage only once the slot's record says it is not stored yet.  Each
accepted PUT's body is an ``IncomingUpload`` (``httpupload.web.incoming``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import parse_qs

from twisted.internet.defer import (
    Deferred,
    ensureDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from httpupload.errors import (
    AlreadyStored,
    BadSlotRequest,
    InvalidSlot,
    LengthMismatch,
    LengthRequired,
    ShuttingDown,
    StorageUnavailable,
    TooManyUploads,
    TypeMismatch,
)
from httpupload.logs import short_id
from httpupload.metadata import MetadataStore
from httpupload.metadata.cache import RecordCache
from httpupload.slots import (
    TOKEN_PARAMETER,
    Slot,
    SlotSigner,
    check_content_type,
    media_type,
    parse_url_path,
)
from httpupload.storage import FileInfo, Storage
from httpupload.web.incoming import IncomingUpload
from httpupload.web.interfaces import IUploadDesk
from httpupload.web.settings import config_default

DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_MAX_UPLOADS_PER_ADDRESS: int = config_default("max_uploads_per_address")

log = Logger()


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


@implementer(IUploadDesk)
class UploadReceiver:
    """Checks PUTs against their slots and keeps track of those in flight."""

    def __init__(
        self,
        signer: SlotSigner,
        storage: Storage,
        clock: IReactorTime,
        max_uploads_per_address: int = DEFAULT_MAX_UPLOADS_PER_ADDRESS,
        metadata: MetadataStore | None = None,
        records: RecordCache | None = None,
    ) -> None:
        self._signer = signer
        self._storage = storage
        self._clock = clock
        self._metadata = metadata
        # Told each record completed here: its first download needs no lookup.
        self._records = records
        self.max_uploads_per_address = max_uploads_per_address
        self._in_flight: dict[str, set[IncomingUpload]] = {}
        # The newest upload of each slot, until it is over: one at a time.
        self._by_slot: dict[str, IncomingUpload] = {}
        self.draining = False
        self._drained: list[Deferred[None]] = []

    def check(
        self, path: bytes, headers: Headers, length: int | None
    ) -> tuple[Slot, str]:
        """The slot and content type of an acceptable PUT; raises UploadRefused."""
        parsed = parse_url_path(path)
        if parsed is None:
            raise InvalidSlot("Not an upload URL")
        tokens = [t for t in (bearer_token(headers), query_token(path)) if t]
        if not tokens:
            raise InvalidSlot(
                "Missing slot token (Authorization: Bearer … or ?token=…)"
            )
        slot = None
        refusal: InvalidSlot | None = None
        for token in tokens:
            try:
                slot = self._signer.verify(token, *parsed)
                break
            except InvalidSlot as e:
                refusal = refusal or e
        if slot is None:
            assert refusal is not None
            raise refusal
        if length is None or not headers.hasHeader(b"Content-Length"):
            raise LengthRequired("Content-Length is required")
        if length != slot.size:
            raise LengthMismatch(
                f"Content-Length is {length}, the slot is for {slot.size} bytes"
            )
        content_types = headers.getRawHeaders(b"Content-Type")
        return slot, _stored_type(slot, content_types[0] if content_types else None)

    def start(
        self,
        path: bytes,
        headers: Headers,
        length: int | None,
        address: str,
        cut_off: Callable[[], None] = lambda: None,
    ) -> IncomingUpload:
        """Accept a PUT and open its write; raises UploadRefused.

        ``cut_off`` drops the PUT's connection (a drain ends, or a newer PUT
        of the slot replaces this one).
        """
        if self.draining:
            raise ShuttingDown("The service is shutting down; try again shortly")
        slot, content_type = self.check(path, headers, length)
        uploads = self._in_flight.setdefault(address, set())
        if len(uploads) >= self.max_uploads_per_address:
            limit = self.max_uploads_per_address
            raise TooManyUploads(
                f"At most {limit} {'upload' if limit == 1 else 'uploads'} at a "
                "time from one address"
            )
        file_id = slot.file_id
        older = self._by_slot.get(file_id)
        if older is not None and not older.finished:
            # Most likely the same client again, its first connection dead
            # but not yet noticed: the newer PUT is the one to keep.
            log.info(
                "A new PUT of {id} replaces one still in flight; cutting that off",
                id=short_id(file_id),
            )
            older.abort().addErrback(
                lambda f: log.failure("Discarding a replaced upload failed", f)
            )
            older.cancel()
        upload = IncomingUpload(
            slot,
            content_type,
            lambda: self._storage.begin_write(file_id),
            self._clock,
            on_done=lambda u: self._forget(address, u),
            on_stored=self._record if self._metadata is not None else None,
            adopt_stored=self._adopt if self._metadata is not None else None,
            replaces=older,
            cancel=cut_off,
        )
        self._by_slot[file_id] = upload
        upload.outcome().addCallback(lambda _: self._slot_over(upload))
        uploads.add(upload)
        upload.admit_when(ensureDeferred(self._admission(slot, older)))
        return upload

    def _slot_over(self, upload: IncomingUpload) -> None:
        if self._by_slot.get(upload.slot.file_id) is upload:
            del self._by_slot[upload.slot.file_id]

    async def _admission(self, slot: Slot, older: IncomingUpload | None) -> None:
        """Whether a PUT may send its body to storage; raises UploadRefused.

        Waits for the older PUT of the slot (if any) to be over, its partial
        file gone; then refuses a slot whose record is complete (stored files
        never change, even on an object store that ignores the create-only
        condition of the commit) or gone.  No metadata store (an embedding
        without one): the create-only commit alone decides.
        """
        if older is not None and await older.outcome():
            raise AlreadyStored("This slot has already been used")
        if self._metadata is None:
            return
        try:
            record = await self._metadata.get(slot.file_id)
        except Exception:
            log.failure(
                "Looking up the record of {id} failed", id=short_id(slot.file_id)
            )
            raise StorageUnavailable(
                "Upload records are unavailable; try again shortly"
            ) from None
        if record is not None and record.completed:
            raise AlreadyStored("This slot has already been used")
        if record is None or record.owner != slot.owner:
            raise InvalidSlot("The slot was withdrawn")

    async def _record_stored(self, slot: Slot, info: FileInfo) -> None:
        """Mark the slot's record stored, before the 201 goes out."""
        assert self._metadata is not None
        record = await self._metadata.complete(
            info.file_id, info.sha256, info.content_type, info.created
        )
        if self._records is not None:
            self._records.remember(record)
        if record is None or record.owner != slot.owner:
            # The slot's record is gone (its owner deleted everything, say):
            # keep no file that nobody is charged for and nothing would serve.
            await self._storage.delete(info.file_id)
            raise InvalidSlot("The slot was withdrawn")

    def _record(self, slot: Slot, info: FileInfo) -> Deferred[None]:
        return ensureDeferred(self._record_stored(slot, info))

    async def _adopt_stored(self, slot: Slot, info: FileInfo) -> FileInfo | None:
        """A retried PUT whose first try was stored but never recorded.

        When recording failed after the commit (the metadata store was
        down), the client got an error and PUTs again: the same bytes (same
        digest) complete the record and get their 201; anything else stays
        a 409.
        """
        assert self._metadata is not None
        record = await self._metadata.get(slot.file_id)
        if record is None or record.completed or record.owner != slot.owner:
            return None
        stored = await self._storage.stat(slot.file_id)
        if stored is None or (stored.sha256, stored.size) != (info.sha256, info.size):
            return None
        done = await self._metadata.complete(
            stored.file_id, stored.sha256, stored.content_type, stored.created
        )
        if done is None:
            return None
        if self._records is not None:
            self._records.remember(done)
        log.info("Recorded {id}, stored by an earlier try", id=short_id(slot.file_id))
        return stored

    def _adopt(self, slot: Slot, info: FileInfo) -> Deferred[FileInfo | None]:
        return ensureDeferred(self._adopt_stored(slot, info))

    def _forget(self, address: str, upload: IncomingUpload) -> None:
        uploads = self._in_flight.get(address)
        if uploads is not None:
            uploads.discard(upload)
            if not uploads:
                del self._in_flight[address]
        if not self._in_flight:
            waiters, self._drained = self._drained, []
            for d in waiters:
                d.callback(None)

    @property
    def in_flight(self) -> int:
        return sum(len(u) for u in self._in_flight.values())

    def slot_ids(self) -> list[str]:
        """File ids of the uploads in flight: the sweep must keep their records
        (``Maintenance`` holds them), however long past the slot's expiry."""
        return [u.slot.file_id for uploads in self._in_flight.values() for u in uploads]

    def drain(self, grace: float) -> Deferred[None]:
        """Refuse new uploads; let those in flight finish for ``grace`` seconds.

        Uploads still receiving their body after that are cut off (and so
        discarded); the others are waited for until their answer has reached
        the client (``release``), so a 201 is never lost to the exit and
        nothing half-written stays.
        """
        self.draining = True
        if not self._in_flight:
            return succeed(None)
        log.info(
            "Draining {count} uploads in flight (up to {grace} s)",
            count=self.in_flight,
            grace=grace,
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        timer: IDelayedCall = self._clock.callLater(grace, self._cut_off)

        def stop_timer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return done.addCallback(stop_timer)

    def _cut_off(self) -> None:
        pending = [
            u for uploads in self._in_flight.values() for u in uploads if not u.finished
        ]
        if pending:
            log.warn(
                "Grace period over: cutting off {count} unfinished uploads",
                count=len(pending),
            )
        for upload in pending:
            upload.cancel()


__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "DEFAULT_MAX_UPLOADS_PER_ADDRESS",
    "TOKEN_PARAMETER",
    "IncomingUpload",
    "UploadReceiver",
    "bearer_token",
    "query_token",
    "repr_digest",
]
