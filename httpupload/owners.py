"""What owners and operators can do with stored files: list, delete, measure.

One place for the operations behind the XEP-0050 ad-hoc commands (for
users) and the operator command, so both behave the same.  A file is always
removed from storage before its record (see ``httpupload.expiry``), and a
deleted file answers 404 at once: downloads check the record first.
Both show stored, client-chosen text (names, owners) through ``display``
(``httpupload._units``, re-exported here), and read a file URL typed by a
person with ``urls.parse_file_url``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from httpupload._units import ESCAPED_CATEGORIES, display
from httpupload.expiry import DEAD_SLOT_AFTER, remove_due
from httpupload.metadata import FileRecord, MetadataStore, Usage
from httpupload.policy import SlotPolicy
from httpupload.slots import url_path
from httpupload.storage import KeepsPartials, Storage
from httpupload.urls import parse_file_url

__all__ = [
    "ESCAPED_CATEGORIES",
    "Listed",
    "Uploads",
    "UsageReport",
    "display",
    "listing_key",
    "uploaded_at",
]


def uploaded_at(record: FileRecord) -> float:
    """When the file was stored (the slot's grant, for records without it)."""
    return record.completed_at if record.completed_at is not None else record.created


def listing_key(record: FileRecord) -> tuple[float, str]:
    """Newest first, then by file id: a total order, so pages never overlap."""
    return (-uploaded_at(record), record.file_id)


@dataclass(frozen=True)
class Listed:
    """A file still served, and its GET URL."""

    record: FileRecord
    url: str


@dataclass(frozen=True)
class UsageReport:
    """An owner's usage beside the limits that apply (0: no limit)."""

    usage: Usage
    window: int
    bytes_per_window: int
    files_per_window: int
    total_bytes: int

    @property
    def held_bytes(self) -> int:
        return sum(self.usage.held.values())


class Uploads:
    """Owner and operator operations over the metadata store and storage.

    ``get_base_url`` builds the GET URLs listed; a take-down URL must be
    under it or under ``put_base_url`` (``[http] public_url``), if given.
    """

    def __init__(
        self,
        metadata: MetadataStore,
        storage: Storage,
        policy: SlotPolicy,
        get_base_url: str,
        clock: IReactorTime,
        put_base_url: str | None = None,
    ) -> None:
        self.metadata = metadata
        self.storage = storage
        self.policy = policy
        self.get_base_url = get_base_url
        self.clock = clock
        # Where GET and PUT URLs start: a take-down URL must be under one.
        bases = [get_base_url] if put_base_url is None else [put_base_url, get_base_url]
        self.base_urls = tuple(dict.fromkeys(bases))

    def url(self, record: FileRecord) -> str:
        """The file's GET URL."""
        return self.get_base_url + url_path(record.file_id, record.filename)

    async def list(self, owner: str) -> list[Listed]:
        """The owner's files still served, newest first, with their GET URLs.

        In ``listing_key`` order, so that a listing shown in pages can go on
        after the last file shown (``after``) and show each file once.
        """
        now = self.clock.seconds()
        records = await self.metadata.list_owner(owner)
        served = sorted((r for r in records if r.served_at(now)), key=listing_key)
        return [Listed(r, self.url(r)) for r in served]

    async def _remove(self, record: FileRecord) -> None:
        await self._remove_bytes(record)
        await self.metadata.delete(record.file_id)

    async def _remove_bytes(self, record: FileRecord) -> None:
        """The file, or the partial upload of a slot never completed."""
        await self.storage.delete(record.file_id)
        if not record.completed and isinstance(self.storage, KeepsPartials):
            await self.storage.discard_partial(record.file_id)

    async def delete(self, owner: str, file_id: str) -> FileRecord | None:
        """Delete one of the owner's files; None if it is not theirs (or gone)."""
        record = await self.metadata.get(file_id)
        if record is None or record.owner != owner:
            return None
        await self._remove(record)
        return record

    async def usage(self, owner: str) -> UsageReport:
        """The owner's usage now, beside the quotas of the policy."""
        quotas = self.policy.quotas
        usage = await self.metadata.usage(owner, self.clock.seconds(), quotas.window)
        return UsageReport(
            usage,
            quotas.window,
            quotas.user.bytes_per_window,
            quotas.user.files_per_window,
            quotas.user.total_bytes,
        )

    async def delete_all(
        self, owner: str, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Delete every file and slot of ``owner`` (account removal).

        File before record, one by one, as everywhere: an interrupted run
        leaves records without files (dropped at the next start), never
        files without records (which reconciliation would adopt and serve).
        """
        records = await self.metadata.owner_records(owner)
        for done, record in enumerate(records, 1):
            await self._remove(record)
            if progress is not None:
                progress(done, len(records))
        # Slots granted meanwhile: their uploads find no record and are refused.
        late = await self.metadata.delete_owner(owner)
        for record in late:
            await self._remove_bytes(record)
        return len(records) + len(late)

    async def take_down(self, url: str) -> FileRecord | None:
        """Remove the file a GET (or PUT) URL points at, whoever owns it.

        The URL is read by ``urls.parse_file_url`` against the service's base
        URLs (``BadFileUrl`` if it is not a file URL of this service); None
        if it names no stored file (its id and name must both match).
        """
        parsed = parse_file_url(url, self.base_urls)
        return await self.take_down_file(parsed.file_id, parsed.filename)

    async def take_down_file(self, file_id: str, filename: str) -> FileRecord | None:
        """Remove the file of that id and name, whoever owns it; None if none."""
        record = await self.metadata.get(file_id)
        if record is not None:
            if record.filename != filename:
                return None
            await self._remove(record)
            return record
        # A file with no record (not yet reconciled): remove it all the same.
        info = await self.storage.stat(file_id)
        if info is None or info.filename != filename:
            return None
        await self.storage.delete(file_id)
        return FileRecord.orphan(info, None)

    async def purge_expired(
        self, batch: int = 200, progress: Callable[[int], None] | None = None
    ) -> int:
        """Remove every file due now, batch by batch; returns how many."""
        removed = 0
        while True:
            due = await remove_due(
                self.metadata,
                self.storage,
                self.clock.seconds(),
                DEAD_SLOT_AFTER,
                batch,
            )
            if not due:
                return removed
            removed += len(due)
            if progress is not None:
                progress(removed)

    async def usage_by_owner(self) -> dict[str, tuple[int, int]]:
        """Files and bytes each owner holds now: owner -> (files, bytes)."""
        return await self.metadata.usage_by_owner(self.clock.seconds())
