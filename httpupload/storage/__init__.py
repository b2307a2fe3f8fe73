"""Where uploaded bytes live, behind one small asynchronous interface.

The filesystem is the first backend; an object store will implement the same
``Storage`` protocol later, so nothing above this package may assume a local
path.  Per-chunk writes are synchronous (they happen inline on the data path,
as twisted.web's own body handling does); everything that can stall (fsync,
renames, opening for read, deleting) returns a Deferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol

from twisted.internet.defer import Deferred


@dataclass(frozen=True)
class FileInfo:
    """What is kept with a stored file and served with it."""

    file_id: str
    filename: str
    size: int
    content_type: str
    sha256: str
    created: float


class PendingUpload(Protocol):
    """A write in progress: nothing is visible until ``commit`` succeeds."""

    def write(self, data: bytes) -> None:
        """Append a chunk; errors are remembered and raised by ``commit``."""

    def commit(self, info: FileInfo) -> Deferred[None]:
        """Make the file durable and visible; fails with AlreadyStored if it exists."""

    def abort(self) -> Deferred[None]:
        """Throw the partial file away; safe to call more than once."""


class Storage(Protocol):
    def begin_write(self, file_id: str) -> PendingUpload:
        """Start receiving the bytes of ``file_id``."""

    def open_read(self, file_id: str) -> Deferred[tuple[FileInfo, BinaryIO] | None]:
        """The stored file and a handle positioned at its start, or None."""

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        """What is known of a stored file, or None."""

    def delete(self, file_id: str) -> Deferred[bool]:
        """Remove a stored file; True if there was one."""

    def list_ids(self) -> Deferred[set[str]]:
        """Every stored file id (start-up reconciliation)."""

    def free_space(self) -> Deferred[int | None]:
        """Bytes the backend can still take, None if it cannot tell."""


__all__ = ["FileInfo", "PendingUpload", "Storage"]
