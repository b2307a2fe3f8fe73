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
from collections.abc import Collection
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from httpupload.metadata import (
    FileRecord,
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


__all__ = ["DEFAULT_SIZE", "RecordCache", "RecordSource"]
