"""Stored files' records, remembered for downloads.

Every GET looks up its file's record (is it stored, has it expired?), a hop
to the store's thread or to PostgreSQL.  A stored file's record never
changes until it is deleted, so the records of recently stored or fetched
files are kept here and a download of one of them needs no lookup.

``RecordCache`` sits at its one use, the download's record lookup: the
download resource asks it instead of the store, the upload receiver hands it
each record it completes, and a download that finds its file gone has it
forget the record.  A record deleted anywhere else (another process or node,
an owner's command, the sweep) stays here until then or until evicted, and
that is safe: files are always removed before their records, so the file
itself is gone and the download is a 404 all the same.  Expiry is judged
from the remembered time on every request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from httpupload.metadata import (
    ALL_USAGE,
    FileRecord,
    MetadataStore,
    Usage,
    UsageNeeds,
)

DEFAULT_SIZE = 10_000


class RecordSource(Protocol):
    """Where a record not remembered is looked up: a ``MetadataStore``."""

    def get(self, file_id: str) -> Deferred[FileRecord | None]: ...


class RecordCache:
    """The completed records of recent uploads and downloads, least recently
    used first out, in front of a store's ``get``."""

    def __init__(self, store: RecordSource, size: int = DEFAULT_SIZE) -> None:
        self.store = store
        self.size = size
        self._records: OrderedDict[str, FileRecord] = OrderedDict()

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        """The record, remembered or looked up (and then remembered if stored)."""
        record = self._records.get(file_id)
        if record is not None:
            self._records.move_to_end(file_id)
            return succeed(record)
        return self.store.get(file_id).addCallback(self.remember)

    def remember(self, record: FileRecord | None) -> FileRecord | None:
        """Keep ``record`` if it is a stored file's; returns it (a callback)."""
        if record is not None and record.completed:
            self._records[record.file_id] = record
            self._records.move_to_end(record.file_id)
            while len(self._records) > self.size:
                self._records.popitem(last=False)
        return record

    def forget(self, file_ids: Collection[str]) -> None:
        """Drop these records (their files are gone, or about to be)."""
        for file_id in file_ids:
            self._records.pop(file_id, None)


class CachedRecords(RecordCache):
    """A whole ``MetadataStore`` in front of a ``RecordCache``: the record
    methods remember and forget, the rest go straight to the store.

    The old shape, kept while the assembly and the web layer move to
    ``RecordCache`` at its one use; the lead removes it then (#11).
    """

    store: MetadataStore

    def __init__(self, store: MetadataStore, size: int = DEFAULT_SIZE) -> None:
        super().__init__(store, size)
        self.ordered = store.ordered

    def _forgetting(self, records: list[FileRecord]) -> list[FileRecord]:
        self.forget([r.file_id for r in records])
        return records

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        done = self.store.complete(file_id, sha256, content_type, at)
        return done.addCallback(self.remember)

    def delete(self, file_id: str) -> Deferred[FileRecord | None]:
        self.forget([file_id])
        return self.store.delete(file_id)

    def delete_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self.store.delete_owner(owner).addCallback(self._forgetting)

    def claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> Deferred[list[FileRecord]]:
        # About to be removed: not served from here meanwhile.
        claimed = self.store.claim_due(now, dead_slot_after, limit, lease_seconds)
        return claimed.addCallback(self._forgetting)

    def start(self) -> Deferred[None]:
        return self.store.start()

    def close(self) -> Deferred[None]:
        return self.store.close()

    def stop(self) -> Deferred[None]:
        return self.store.close()

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        return self.store.reserve(record, window_seconds, check, needs)

    def list_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self.store.list_owner(owner)

    def owner_records(self, owner: str) -> Deferred[list[FileRecord]]:
        return self.store.owner_records(owner)

    def due(
        self, now: float, dead_slot_after: float, limit: int
    ) -> Deferred[list[FileRecord]]:
        return self.store.due(now, dead_slot_after, limit)

    def hold(self, file_ids: Collection[str], until: float) -> Deferred[None]:
        return self.store.hold(file_ids, until)

    def all_ids(self) -> Deferred[set[str]]:
        return self.store.all_ids()

    def incomplete_ids(self) -> Deferred[set[str]]:
        return self.store.incomplete_ids()

    def usage(self, owner: str, now: float, window_seconds: float) -> Deferred[Usage]:
        return self.store.usage(owner, now, window_seconds)

    def usage_by_owner(self, now: float) -> Deferred[dict[str, tuple[int, int]]]:
        return self.store.usage_by_owner(now)


__all__ = ["DEFAULT_SIZE", "CachedRecords", "RecordCache", "RecordSource"]
