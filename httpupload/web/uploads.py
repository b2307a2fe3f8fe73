"""Receiving PUTs and appends into storage, and keeping track of those in flight.

The head is judged first (``httpupload.web.judging``: the token, the URL,
the lengths, the type), before any byte of the body is stored.  The
receiver keeps the uploads in flight: to bound them per client address, to
drain them before the process stops, and to keep one per slot (a new
request on a slot cuts off the older one and waits until its bytes are kept
or gone, so nothing is ever written twice for one slot).  A body goes to
storage only once the slot's record says it is not stored yet; a slot
whose file is stored is compared, never written.  Where storage keeps
partial uploads (``KeepsPartials``), a body that breaks off is kept for the
slot to resume (docs/resumable.md), its record's ``slot_expires`` extended.
Each accepted body is an ``IncomingUpload`` (``httpupload.web.incoming``).

About 500 lines: admission (the record, the stored file, the partial
upload's offset and hash) and the bookkeeping of uploads in flight share
the receiver's per-slot state; splitting the resumption part out
(``_completed``, ``_prefix_hash``, ``_kept``) is the next step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

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
    AlreadyComplete,
    AlreadyStored,
    InvalidSlot,
    NoLongerAllowed,
    OffsetMismatch,
    ShuttingDown,
    SlotRequestError,
    StorageUnavailable,
    TooManyUploads,
)
from httpupload.logs import short_id
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metadata.cache import RecordCache
from httpupload.slots import (
    TOKEN_PARAMETER,
    Slot,
    SlotSigner,
)
from httpupload.storage import FileInfo, KeepsPartials, Storage
from httpupload.web.incoming import Admitted, IncomingUpload
from httpupload.web.interfaces import IUploadDesk
from httpupload.web.judging import (
    DEFAULT_CONTENT_TYPE,
    Judged,
    PutJudge,
    bearer_token,
    query_token,
    repr_digest,
    sent_digest,
)
from httpupload.web.resumable import (
    PLAIN,
    Dialect,
)
from httpupload.web.settings import config_default

DEFAULT_MAX_UPLOADS_PER_ADDRESS: int = config_default("max_uploads_per_address")
DEFAULT_PARTIAL_LIFETIME: int = config_default("partial_lifetime")
# Hash states and types of partial uploads remembered on this node.
MAX_REMEMBERED = 10_000

log = Logger()


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
        partial_lifetime: int = DEFAULT_PARTIAL_LIFETIME,
        recheck: Callable[[str, int, str, str], None] | None = None,
    ) -> None:
        """``recheck(owner, size, content_type, purpose)`` runs the grant's
        rules again when an upload completes (``SlotPolicy.recheck``)."""
        self._signer = signer
        self._storage = storage
        # A storage that keeps partial uploads makes slot URLs resumable.
        self.partials: KeepsPartials | None = (
            storage if isinstance(storage, KeepsPartials) else None
        )
        self.partial_lifetime = partial_lifetime
        self._recheck = recheck
        # Per slot with a partial kept here: the hash state at its end (so a
        # resume on this node need not read the bytes back) and the type its
        # PUT gave (an append carries none).
        self._hashes: dict[str, tuple[int, hashlib._Hash]] = {}
        self._types: dict[str, str] = {}
        self._judge = PutJudge(signer, self.partials is not None, self._types)
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

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    @property
    def storage(self) -> Storage:
        return self._storage

    def check(
        self, path: bytes, headers: Headers, length: int | None
    ) -> tuple[Slot, str]:
        """The slot and content type of an acceptable plain PUT, or UploadRefused."""
        judged = self.judge(path, headers, length)
        if judged.expired:
            raise InvalidSlot("The slot has expired")
        return judged.slot, judged.content_type

    def authorise(self, path: bytes, headers: Headers) -> tuple[Slot, bool]:
        """The slot a request's token is for, and whether the token expired
        (``PutJudge.authorise``)."""
        return self._judge.authorise(path, headers)

    def judge(
        self,
        path: bytes,
        headers: Headers,
        length: int | None,
        method: bytes = b"PUT",
        dialect: Dialect = PLAIN,
    ) -> Judged:
        """What an acceptable PUT or PATCH is; raises UploadRefused."""
        return self._judge.judge(path, headers, length, method, dialect)

    def start(
        self,
        path: bytes,
        headers: Headers,
        length: int | None,
        address: str,
        cut_off: Callable[[], None] = lambda: None,
        method: bytes = b"PUT",
        dialect: Dialect = PLAIN,
    ) -> IncomingUpload:
        """Accept a PUT (or an append) and open its write; raises UploadRefused.

        ``cut_off`` drops the PUT's connection (a drain ends, or a newer PUT
        of the slot replaces this one).
        """
        if self.draining:
            raise ShuttingDown("The service is shutting down; try again shortly")
        judged = self.judge(path, headers, length, method, dialect)
        slot, content_type = judged.slot, judged.content_type
        uploads = self._in_flight.setdefault(address, set())
        if len(uploads) >= self.max_uploads_per_address:
            limit = self.max_uploads_per_address
            raise TooManyUploads(
                f"At most {limit} {'upload' if limit == 1 else 'uploads'} at a "
                "time from one address"
            )
        file_id = slot.file_id
        older = self.interrupt(file_id)
        partials, offset = self.partials, judged.offset
        upload = IncomingUpload(
            slot,
            content_type,
            (
                (lambda: partials.begin_partial(file_id, offset))
                if partials is not None
                else (lambda: self._storage.begin_write(file_id))
            ),
            self._clock,
            on_done=lambda u: self._forget(address, u),
            on_stored=self._record if self._metadata is not None else None,
            adopt_stored=self._adopt if self._metadata is not None else None,
            replaces=older,
            cancel=cut_off,
            offset=offset,
            complete=judged.complete,
            on_kept=self._kept if partials is not None else None,
        )
        self._by_slot[file_id] = upload
        upload.outcome().addCallback(lambda _: self._slot_over(upload))
        uploads.add(upload)
        upload.admit_when(
            ensureDeferred(self._admission(judged, older, method, headers))
        )
        return upload

    def interrupt(self, file_id: str) -> IncomingUpload | None:
        """Cut off the upload of ``file_id`` in flight, if any; return it
        (one already finishing is returned, not cut off).

        Most likely the same client again, its first connection dead but not
        yet noticed: the newer request is the one to serve.  What the older
        one wrote is kept where storage keeps partials (its connection's
        loss keeps it), else thrown away; its ``outcome`` says when.
        """
        older = self._by_slot.get(file_id)
        if older is None or older.finished:
            # Being committed (or kept): waited for, never cut off.
            return older
        log.info(
            "A new request on {id} replaces an upload still in flight; "
            "cutting that off",
            id=short_id(file_id),
        )
        if self.partials is None:
            older.abort().addErrback(
                lambda f: log.failure("Discarding a replaced upload failed", f)
            )
        older.cancel()
        return older

    def _slot_over(self, upload: IncomingUpload) -> None:
        if self._by_slot.get(upload.slot.file_id) is upload:
            del self._by_slot[upload.slot.file_id]

    async def _admission(
        self,
        judged: Judged,
        older: IncomingUpload | None,
        method: bytes = b"PUT",
        headers: Headers | None = None,
    ) -> Admitted | None:
        """Whether a PUT may send its body to storage; raises UploadRefused.

        Waits for the older PUT of the slot (if any) to be over, its partial
        file kept or gone; then refuses a slot whose record is gone, and
        compares a PUT of a completed slot with what is stored (stored files
        never change, even on an object store that ignores the create-only
        condition of the commit).  An append must start where the partial
        upload ends.  No metadata store (an embedding without one): the
        create-only commit alone decides.
        """
        slot = judged.slot
        if older is not None and await older.outcome() and self._metadata is None:
            raise AlreadyStored("This slot has already been used")
        record = await self.lookup(slot)
        if record is None:
            if judged.expired:
                raise InvalidSlot("The slot has expired")
            return None
        if record.completed:
            return await self._completed(judged, method, headers)
        if judged.expired and self._clock.seconds() >= record.slot_expires:
            raise InvalidSlot("The slot has expired")
        if self.partials is None or method != b"PATCH":
            return None  # a PUT starts afresh: no look at what is kept
        kept = await self.partials.partial_size(slot.file_id) or 0
        if judged.offset != kept:
            raise OffsetMismatch(kept, judged.offset)
        return Admitted(sha256=await self._prefix_hash(slot.file_id, kept))

    async def lookup(self, slot: Slot) -> FileRecord | None:
        """The slot's record; InvalidSlot if it is another's (or gone, with a
        metadata store); None without a metadata store."""
        if self._metadata is None:
            return None
        try:
            record = await self._metadata.get(slot.file_id)
        except Exception:
            log.failure(
                "Looking up the record of {id} failed", id=short_id(slot.file_id)
            )
            raise StorageUnavailable(
                "Upload records are unavailable; try again shortly"
            ) from None
        if record is None or record.owner != slot.owner:
            raise InvalidSlot("The slot was withdrawn")
        return record

    async def _completed(
        self, judged: Judged, method: bytes, headers: Headers | None
    ) -> Admitted:
        """A request on a slot whose file is stored: compared, never written."""
        slot = judged.slot
        stored = await self._storage.stat(slot.file_id)
        if stored is None:
            raise AlreadyStored("This slot has already been used")
        if method == b"PATCH":
            if judged.offset != slot.size:
                raise OffsetMismatch(slot.size, judged.offset)
            if judged.length:
                raise AlreadyComplete("The upload is complete already")
            return Admitted(stored=stored, same=True)  # the answer, replayed
        digest = sent_digest(headers) if headers is not None else None
        if digest is not None and digest != stored.sha256:
            raise AlreadyStored(
                "This slot has already been used, for other bytes (Repr-Digest)"
            )
        return Admitted(stored=stored, same=digest is not None)

    async def _prefix_hash(self, file_id: str, offset: int) -> hashlib._Hash | None:
        """The hash state of the first ``offset`` kept bytes (None for none)."""
        if offset == 0:
            return None
        cached = self._hashes.get(file_id)
        if cached is not None and cached[0] == offset:
            return cached[1].copy()
        assert self.partials is not None
        log.info(
            "Reading back {offset} bytes of {id} to resume its hash",
            offset=offset,
            id=short_id(file_id),
        )
        return await self.partials.partial_sha256(file_id, offset)

    def _kept(self, slot: Slot, offset: int, sha256: hashlib._Hash | None) -> None:
        """A partial upload is kept: remember its hash, keep its record and URL."""
        file_id = slot.file_id
        if sha256 is not None:
            self._hashes[file_id] = (offset, sha256)
            if len(self._hashes) > MAX_REMEMBERED:
                del self._hashes[next(iter(self._hashes))]
        else:
            self._hashes.pop(file_id, None)
        log.info(
            "Kept {offset} of {size} bytes of {id} to resume",
            offset=offset,
            size=slot.size,
            id=short_id(file_id),
        )
        if self._metadata is None:
            return
        until = self._clock.seconds() + self.partial_lifetime
        self._metadata.extend_slot(file_id, until).addErrback(
            lambda f: log.failure("Keeping the record of a partial upload failed", f)
        )

    def remember_type(self, file_id: str, content_type: str) -> None:
        """The type a resumable PUT gave, for the appends that finish it.

        Kept for as many slots as are likely to resume on this node; an
        append whose type was forgotten gets the slot's.
        """
        self._types[file_id] = content_type
        if len(self._types) > MAX_REMEMBERED:
            del self._types[next(iter(self._types))]

    async def _record_stored(self, slot: Slot, info: FileInfo) -> None:
        """Mark the slot's record stored, before the 201 goes out.

        Authorisation is judged again here, at completion (a resumed upload
        may complete hours after it began): the record must still be the
        slot owner's and unfinished.
        """
        self._hashes.pop(slot.file_id, None)
        self._types.pop(slot.file_id, None)
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
        if self._recheck is not None:
            try:
                self._recheck(
                    record.owner, record.size, info.content_type, record.purpose
                )
            except SlotRequestError as e:
                log.info(
                    "Upload of {id} refused at completion: {why}",
                    id=short_id(info.file_id),
                    why=str(e),
                )
                await self._storage.delete(info.file_id)
                await self._metadata.delete(info.file_id)
                if self._records is not None:
                    self._records.forget([info.file_id])
                raise NoLongerAllowed(f"Refused at completion: {e}") from None

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
    "DEFAULT_PARTIAL_LIFETIME",
    "TOKEN_PARAMETER",
    "IncomingUpload",
    "Judged",
    "UploadReceiver",
    "bearer_token",
    "query_token",
    "repr_digest",
    "sent_digest",
]
