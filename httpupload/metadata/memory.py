"""The metadata store in a dict, for tests and embedders that keep no records.

It honours ``MetadataStore`` as the SQLite store does (the contract suite in
``tests/test_metadata_contract.py`` runs the same tests on both), but every
operation runs at once, on the caller's thread, and returns a Deferred that
has already fired: a test can read it with ``successResultOf``.  Nothing here
reads a clock: like the other stores, every method is told the time.

Nothing survives the process, so it is no store for a service that must keep
its quotas and expiry across restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from httpupload.metadata import ALL_USAGE, FileRecord, Grant, Usage, UsageNeeds

T = TypeVar("T")


class DuplicateRecord(ValueError):
    """A record with this file id exists already (the stores' unique key)."""


class MemoryMetadataStore:
    """``MetadataStore`` in memory: synchronous inside, Deferreds outside."""

    # Everything happens when it is called, so in the order it is called.
    ordered = True

    def __init__(self) -> None:
        # Insertion order, as SQLite's rowid order: ``due`` and the listings
        # that promise no order give the oldest records first.
        self.records: dict[str, FileRecord] = {}
        # A sweeper's lease or an upload's hold, per record (``lease_until``).
        self.leases: dict[str, float] = {}
        self.started = False
        self.closed = False

    @staticmethod
    def _now(f: Callable[..., T], *args: object) -> Deferred[T]:
        """Run ``f`` now; its result, or what it raised, as a fired Deferred."""
        return maybeDeferred(f, *args)

    # -- lifecycle ------------------------------------------------------------

    def open(self) -> None:
        """Nothing to open (the SQLite and PostgreSQL stores check a schema)."""

    def start(self) -> Deferred[None]:
        self.started = True
        self.closed = False
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)

    # -- reservations and usage -------------------------------------------------

    def _usage(
        self,
        owner: str,
        now: float,
        window_seconds: float,
        needs: UsageNeeds = ALL_USAGE,
    ) -> Usage:
        mine = [r for r in self.records.values() if r.owner == owner]
        window: tuple[Grant, ...] = ()
        if needs.window:
            start = now - window_seconds
            window = tuple(
                Grant(
                    r.created,
                    r.size,
                    r.purpose,
                    None if r.completed else r.slot_expires,
                )
                for r in sorted(mine, key=lambda r: r.created)
                if r.created > start and (r.completed or r.slot_expires > now)
            )
        held: dict[str, int] = {}
        pending: tuple[float, ...] = ()
        if needs.held:
            for r in mine:
                if _holds(r, now):
                    held[r.purpose] = held.get(r.purpose, 0) + r.size
            pending = tuple(
                sorted(
                    r.slot_expires
                    for r in mine
                    if not r.completed and r.slot_expires > now
                )
            )
        global_bytes = 0
        if needs.global_bytes:
            global_bytes = sum(r.size for r in self.records.values() if _holds(r, now))
        return Usage(now, window, held, global_bytes, pending)

    def _reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds,
    ) -> None:
        check(self._usage(record.owner, record.created, window_seconds, needs))
        if record.file_id in self.records:
            raise DuplicateRecord(record.file_id)
        self.records[record.file_id] = record

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        return self._now(self._reserve, record, window_seconds, check, needs)

    def usage(self, owner: str, now: float, window_seconds: float) -> Deferred[Usage]:
        return self._now(self._usage, owner, now, window_seconds)

    def _usage_by_owner(self, now: float) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for r in self.records.values():
            if _holds(r, now):
                files, size = counts.get(r.owner, (0, 0))
                counts[r.owner] = (files + 1, size + r.size)
        return dict(sorted(counts.items(), key=lambda item: -item[1][1]))

    def usage_by_owner(self, now: float) -> Deferred[dict[str, tuple[int, int]]]:
        return self._now(self._usage_by_owner, now)

    # -- single records -----------------------------------------------------------

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        return succeed(self.records.get(file_id))

    def _complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> FileRecord | None:
        record = self.records.get(file_id)
        if record is not None and not record.completed:
            record = replace(
                record,
                completed=True,
                completed_at=at,
                sha256=sha256,
                content_type=content_type,
            )
            self.records[file_id] = record
        return record

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        return self._now(self._complete, file_id, sha256, content_type, at)

    def _extend_slot(self, file_id: str, until: float) -> FileRecord | None:
        record = self.records.get(file_id)
        if record is not None and not record.completed and record.slot_expires < until:
            record = replace(record, slot_expires=until)
            self.records[file_id] = record
        return record

    def extend_slot(self, file_id: str, until: float) -> Deferred[FileRecord | None]:
        return self._now(self._extend_slot, file_id, until)

    def _delete(self, file_id: str) -> FileRecord | None:
        self.leases.pop(file_id, None)
        return self.records.pop(file_id, None)

    def delete(self, file_id: str) -> Deferred[FileRecord | None]:
        return self._now(self._delete, file_id)

    # -- an owner's records ---------------------------------------------------------

    def _owner_records(self, owner: str) -> list[FileRecord]:
        return [r for r in self.records.values() if r.owner == owner]

    def list_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        stored = [r for r in self._owner_records(owner) if r.completed]
        stored.sort(key=lambda r: r.completed_at or 0.0, reverse=True)
        return succeed(stored)

    def owner_records(self, owner: str) -> Deferred[list[FileRecord]]:
        return succeed(self._owner_records(owner))

    def _delete_owner(self, owner: str) -> list[FileRecord]:
        records = self._owner_records(owner)
        for r in records:
            self._delete(r.file_id)
        return records

    def delete_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._now(self._delete_owner, owner)

    # -- sweeping and reconciliation --------------------------------------------

    def _due(self, now: float, dead_slot_after: float, limit: int) -> list[FileRecord]:
        dead = now - dead_slot_after
        due = [r for r in self.records.values() if _due(r, now, dead)]
        return due[: max(limit, 0)]

    def due(
        self, now: float, dead_slot_after: float, limit: int
    ) -> Deferred[list[FileRecord]]:
        return self._now(self._due, now, dead_slot_after, limit)

    def _hold(self, file_ids: Collection[str], until: float) -> None:
        for file_id in file_ids:
            record = self.records.get(file_id)
            if record is not None and not record.completed:
                self.leases[file_id] = max(self.leases.get(file_id, 0.0), until)

    def hold(self, file_ids: Collection[str], until: float) -> Deferred[None]:
        return self._now(self._hold, file_ids, until)

    def _claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> list[FileRecord]:
        dead = now - dead_slot_after
        free = [
            r
            for r in self.records.values()
            if _due(r, now, dead) and self.leases.get(r.file_id, now) <= now
        ][: max(limit, 0)]
        for r in free:
            self.leases[r.file_id] = now + lease_seconds
        return free

    def claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> Deferred[list[FileRecord]]:
        return self._now(self._claim_due, now, dead_slot_after, limit, lease_seconds)

    def all_ids(self) -> Deferred[set[str]]:
        return succeed(set(self.records))

    def incomplete_ids(self) -> Deferred[set[str]]:
        return succeed({r.file_id for r in self.records.values() if not r.completed})


def _holds(record: FileRecord, now: float) -> bool:
    """Whether the record holds room now: stored and unexpired, or a live slot
    (the stores' ``_HELD``; ``FileRecord.counts_at`` ignores expiry)."""
    if record.completed:
        return record.expires is None or record.expires > now
    return record.slot_expires > now


def _due(record: FileRecord, now: float, dead: float) -> bool:
    """Whether the sweep takes the record: an expired file or a dead slot."""
    if record.completed:
        return record.expires is not None and record.expires <= now
    return record.slot_expires <= dead


__all__ = ["DuplicateRecord", "MemoryMetadataStore"]
