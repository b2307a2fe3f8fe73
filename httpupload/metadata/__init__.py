"""What is known of every slot and stored file, behind one small interface.

The embedded default is SQLite in the storage folder (``metadata.sqlite``);
``httpupload.metadata.postgres`` implements the same ``MetadataStore`` for
several nodes sharing one PostgreSQL database.  Both run one query layer
(``query``) over their dialect's SQL (``sqlite.sql``, ``postgresql.sql``);
``memory`` holds records in a dict, for tests and embedders.  ``cache``
keeps stored files' records for downloads.
Every method returns a Deferred and never blocks the reactor.

A record is made when a slot is granted (``completed`` false: it *reserves*
its size against quotas until the slot expires) and completed when the upload
is committed.  Quota counts are derived from the records, so they survive
restarts, and the check and the reservation happen in one transaction, so
concurrent slot requests cannot overshoot a quota.
"""

from __future__ import annotations

# The SQL stores read their queries with importlib.resources (query.py), and
# a root-run operator command opens a store only after it has become the
# storage folder's owner (httpupload.privileges), who may not be able to read
# the standard library of a Python installed for root alone: what reading a
# package's file needs is imported here, with the package, before the switch.
import importlib.readers
import importlib.resources  # noqa: F401
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from httpupload.storage import FileInfo

PURPOSES = ("message", "profile", "permanent", "ephemeral")


@dataclass(frozen=True)
class FileRecord:
    """One slot, and once uploaded, its file."""

    file_id: str
    owner: str  # bare JID
    filename: str
    size: int
    content_type: str | None
    purpose: str
    created: float  # when the slot was granted
    slot_expires: float  # until when the PUT URL is valid
    expires: float | None  # when the file stops being served; None: never
    completed: bool = False
    completed_at: float | None = None
    sha256: str | None = None

    @classmethod
    def orphan(cls, info: FileInfo, expires: float | None) -> FileRecord:
        """A stored file's record made from storage alone (owner unknown)."""
        return cls(
            file_id=info.file_id,
            owner="",
            filename=info.filename,
            size=info.size,
            content_type=info.content_type,
            purpose="message",
            created=info.created,
            slot_expires=info.created,
            expires=expires,
            completed=True,
            completed_at=info.created,
            sha256=info.sha256,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FileRecord:
        """A record from a row of ``RECORD_COLUMNS`` (either store)."""
        values = dict(zip(RECORD_COLUMNS, row, strict=True))
        values["completed"] = bool(values["completed"])  # SQLite: 0 or 1
        return cls(**values)

    def row(self) -> tuple[Any, ...]:
        """The record's values in ``RECORD_COLUMNS`` order, for an INSERT."""
        return tuple(getattr(self, column) for column in RECORD_COLUMNS)

    def counts_at(self, now: float) -> bool:
        """Whether this record holds room now: a stored file or a live slot."""
        return self.completed or self.slot_expires > now

    def served_at(self, now: float) -> bool:
        return self.completed and (self.expires is None or self.expires > now)


# The stores' columns: one per FileRecord field, in the same order.
RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FileRecord))


@dataclass(frozen=True)
class Grant:
    """One upload (or live reservation) inside the sliding window."""

    at: float
    size: int
    purpose: str
    # A slot not (yet) used stops counting when its PUT URL expires, which
    # may be before it would leave the window; None for a stored file.
    slot_expires: float | None = None

    def leaves(self, window: float) -> float:
        """When this grant stops counting in a window of ``window`` seconds,
        as things stand (an unused slot that gets used counts on)."""
        left = self.at + window
        return left if self.slot_expires is None else min(left, self.slot_expires)


@dataclass(frozen=True)
class Usage:
    """What one owner (and everyone) holds, as quotas see it, at ``now``."""

    now: float
    # Grants inside the window, oldest first: enough to tell when the window
    # will have room again.
    window: tuple[Grant, ...]
    # Bytes the owner holds now (stored and unexpired, or reserved), by purpose.
    held: dict[str, int]
    # Bytes everyone holds now.
    global_bytes: int
    # When each of the owner's slots not yet used expires (live ones only),
    # earliest first: the pending-slot bound and its retry stamp.
    pending: tuple[float, ...] = ()


@dataclass(frozen=True)
class UsageNeeds:
    """Which parts of a ``Usage`` a check reads: the store computes only those.

    With no quota configured a reservation is a bare insert, however many
    files the owner holds.
    """

    window: bool = True
    # ``held`` covers ``Usage.pending`` too: both are what the owner holds now.
    held: bool = True
    global_bytes: bool = True


ALL_USAGE = UsageNeeds()


class MetadataStore(Protocol):
    # True if operations take effect in the order they were called (a slot
    # needing no quota check is then answered before its record is written).
    ordered: bool

    def start(self) -> Deferred[None]:
        """Open (creating or upgrading the schema); called once at start-up."""

    def close(self) -> Deferred[None]:
        """Let go of the database (threads, connections); called once at the end."""

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        """Insert ``record`` if ``check(usage)`` does not raise, atomically.

        ``usage`` is the owner's, as it stands at ``record.created``, without
        the new record; whatever ``check`` raises fails the Deferred and
        nothing is inserted.
        """

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        """Mark an uploaded slot stored; None if there is no such record."""

    def extend_slot(self, file_id: str, until: float) -> Deferred[FileRecord | None]:
        """Keep an unfinished slot's PUT URL valid (and its reservation
        counted) until ``until``: a partial upload is kept for it.

        Its ``slot_expires`` becomes ``until`` if that is later, so the slot
        counts in ``usage`` and stays out of ``due`` as a live slot would.
        Never shortens; a completed or unknown record is left alone.  Returns
        the record as it now stands, or None if there is none.  Running it
        twice is harmless.
        """

    def get(self, file_id: str) -> Deferred[FileRecord | None]: ...

    def list_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        """The owner's stored files, newest first."""

    def delete(self, file_id: str) -> Deferred[FileRecord | None]:
        """Forget one record; returns it, or None if there was none."""

    def owner_records(self, owner: str) -> Deferred[list[FileRecord]]:
        """Every record of ``owner``: stored files and slots alike."""

    def delete_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        """Forget every record of ``owner``; returns them."""

    def due(
        self, now: float, dead_slot_after: float, limit: int
    ) -> Deferred[list[FileRecord]]:
        """Up to ``limit`` records to sweep: files expired by ``now``, and slots
        never completed whose PUT URL expired ``dead_slot_after`` seconds ago."""

    def hold(self, file_ids: Collection[str], until: float) -> Deferred[None]:
        """Keep these slots' records from any sweep until ``until``.

        For uploads in flight: a PUT judged in time may run long past its
        slot's expiry, and a record swept meanwhile would lose the upload.
        Stored files and unknown ids are left alone; a hold never shortens
        a lease.  Running it twice is harmless.
        """

    def claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> Deferred[list[FileRecord]]:
        """Like ``due``, but each record returned is leased to the caller.

        Several sweepers (one per node) may run at once: a record leased
        until after ``now`` is skipped, so no two get the same record, and one
        whose sweeper died is claimed again once ``now + lease_seconds`` (its
        lease) has passed.  A record under a ``hold`` is skipped the same
        way.  The caller deletes what it claimed.
        """

    def all_ids(self) -> Deferred[set[str]]:
        """Every file id on record (start-up reconciliation)."""

    def incomplete_ids(self) -> Deferred[set[str]]:
        """Ids of slots not (yet) marked stored."""

    def usage(self, owner: str, now: float, window_seconds: float) -> Deferred[Usage]:
        """The owner's usage now, as ``reserve`` would check it."""

    def usage_by_owner(self, now: float) -> Deferred[dict[str, tuple[int, int]]]:
        """Owner -> (files, bytes) held now, for operators."""


__all__ = [
    "ALL_USAGE",
    "PURPOSES",
    "RECORD_COLUMNS",
    "FileRecord",
    "Grant",
    "MetadataStore",
    "Usage",
    "UsageNeeds",
]
