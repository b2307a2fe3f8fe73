"""What owners and operators can do with stored files: list, delete, measure.

One place for the operations behind the XEP-0050 ad-hoc commands (for
users) and the operator command, so both behave the same.  A file is always
removed from storage before its record (see ``httpupload.expiry``), and a
deleted file answers 404 at once: downloads check the record first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from httpupload.expiry import DEAD_SLOT_AFTER, remove_due
from httpupload.metadata import FileRecord, MetadataStore, Usage
from httpupload.policy import SlotPolicy
from httpupload.slots import parse_url_path, url_path
from httpupload.storage import Storage


@dataclass(frozen=True)
class Listed:
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
    """Owner and operator operations over the metadata store and storage."""

    def __init__(
        self,
        metadata: MetadataStore,
        storage: Storage,
        policy: SlotPolicy,
        get_base_url: str,
        clock: IReactorTime,
    ) -> None:
        self.metadata = metadata
        self.storage = storage
        self.policy = policy
        self.get_base_url = get_base_url
        self.clock = clock

    def url(self, record: FileRecord) -> str:
        return self.get_base_url + url_path(record.file_id, record.filename)

    async def list(self, owner: str) -> list[Listed]:
        """The owner's files still served, newest first, with their GET URLs."""
        now = self.clock.seconds()
        records = await self.metadata.list_owner(owner)
        return [Listed(r, self.url(r)) for r in records if r.served_at(now)]

    async def _remove(self, record: FileRecord) -> None:
        await self.storage.delete(record.file_id)
        await self.metadata.delete(record.file_id)

    async def delete(self, owner: str, file_id: str) -> FileRecord | None:
        """Delete one of the owner's files; None if it is not theirs (or gone)."""
        record = await self.metadata.get(file_id)
        if record is None or record.owner != owner:
            return None
        await self._remove(record)
        return record

    async def usage(self, owner: str) -> UsageReport:
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
            await self.storage.delete(record.file_id)
        return len(records) + len(late)

    async def take_down(self, url: str) -> FileRecord | None:
        """Remove the file a GET (or PUT) URL points at, whoever owns it.

        None if the URL names no stored file (its id and name must match).
        """
        path = url.split("://", 1)[-1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        parsed = parse_url_path(path.encode("utf-8"))
        if parsed is None:
            return None
        file_id, filename = parsed
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
        return await self.metadata.usage_by_owner(self.clock.seconds())
