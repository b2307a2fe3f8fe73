"""S3 direct mode: clients PUT to the object store and GET from a public base.

No byte passes through httpupload, so two things it normally learns from the
PUT are learnt otherwise: the slot's URLs are a presigned PUT (binding the
length and the type: the slot's, else ``application/octet-stream``, so the
uploader never picks what the bucket serves; valid for the slot's
lifetime) and a public GET URL; and a slot's record is completed by looking
for its object once the slot has expired, so that quotas go on counting the
file and expiry deletes it from the bucket when its time comes.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from httpupload.slots import Slot
from httpupload.storage import FileInfo

log = Logger()


class DirectRecord(Protocol):
    """What the completion reads of a slot's record (a ``FileRecord`` has it)."""

    @property
    def file_id(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def completed(self) -> bool: ...


R = TypeVar("R", bound=DirectRecord)


class DirectRecords(Protocol[R]):
    """What the completion needs of the metadata store (``MetadataStore`` has it).

    Declared here, not imported, so that storage stays below metadata.
    """

    def due(self, now: float, dead_slot_after: float, limit: int) -> Deferred[list[R]]:
        """Records to sweep (only the slots among them are looked at)."""

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[R | None]:
        """Mark an uploaded slot stored; None if there is no such record."""


class DirectStorage(Protocol):
    """What direct mode needs of a storage backend (``S3Storage`` has it)."""

    def start(self) -> Deferred[None]: ...

    def presign_put(
        self, file_id: str, size: int, content_type: str | None, expires_in: int
    ) -> tuple[str, dict[str, str]]: ...

    def public_url(self, file_id: str, filename: str) -> str: ...

    def stat(self, file_id: str) -> Deferred[FileInfo | None]: ...


class DirectUrls:
    """A slot's URLs in direct mode."""

    def __init__(self, storage: DirectStorage) -> None:
        self.storage = storage

    async def urls(self, slot: Slot, lifetime: int) -> tuple[str, str]:
        """(PUT URL, GET URL); the store's client is started first if need be.

        The PUT must carry exactly the bound ``Content-Type`` (the slot's,
        else ``application/octet-stream``): XEP-0363 slot headers cannot
        carry it, so a client that sends another type, or none, gets the
        store's ``403 SignatureDoesNotMatch`` (docs/s3.md).
        """
        await self.storage.start()
        put_url, _bound = self.storage.presign_put(
            slot.file_id, slot.size, slot.content_type, lifetime
        )
        return put_url, self.storage.public_url(slot.file_id, slot.filename)


async def complete_direct_uploads(
    metadata: DirectRecords[R],
    storage: DirectStorage,
    now: float,
    limit: int,
) -> int:
    """Mark stored the expired slots whose object is in the bucket; how many.

    A slot whose object is missing is left alone: the sweep forgets it (and
    deletes any late object) once it is a day dead.  An object of another
    size than the slot's is not this slot's upload (the presigned URL binds
    the length) and is left to that sweep too.
    """
    completed = 0
    for record in await metadata.due(now, 0.0, limit):
        if record.completed:
            continue
        info = await storage.stat(record.file_id)
        if info is None or info.size != record.size:
            continue
        done = await metadata.complete(
            record.file_id,
            info.sha256,
            info.content_type or record.content_type or "application/octet-stream",
            info.created or now,
        )
        if done is not None:
            completed += 1
    if completed:
        log.info("Recorded {count} direct uploads found in the bucket", count=completed)
    return completed
