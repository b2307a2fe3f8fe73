"""Where uploaded bytes live, behind one small asynchronous interface.

Backends: a local filesystem and S3-compatible object storage; nothing above
this package may assume a local path.  Per-chunk writes are synchronous calls
(they happen inline on the data path, as twisted.web's own body handling
does) but a backend that cannot keep up says so by returning a Deferred, and
the HTTP layer stops reading the body until it fires.  Everything that can
stall (fsync, renames, opening for read, deleting, remote calls) returns a
Deferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.web.server import Request


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

    def write(self, data: bytes) -> Deferred[None] | None:
        """Append a chunk; errors are remembered and raised by ``commit``.

        None: send more at once.  A Deferred: the backend is behind (parts
        still on their way to an object store, say); the caller stops reading
        the body until it fires.  It never fails.
        """

    def commit(self, info: FileInfo) -> Deferred[None]:
        """Make the file durable and visible; fails with AlreadyStored if it exists."""

    def abort(self) -> Deferred[None]:
        """Throw the partial file away; safe to call more than once."""


class StoredFile(Protocol):
    """A stored file opened for reading: its info now, its bytes on ``send``."""

    info: FileInfo

    def send(self, request: Request, offset: int, length: int) -> None:
        """Write ``length`` bytes from ``offset`` into ``request``, then finish it.

        The status and headers are already set.  Honours the request's flow
        control (a producer registered on it); if the bytes cannot be had
        midway, the connection is cut rather than the response ended as if
        whole.  Releases the file when done or when the client goes away.
        """

    def close(self) -> None:
        """Release the file without sending it (HEAD, 304, 416, a refusal)."""


class Storage(Protocol):
    def begin_write(self, file_id: str) -> PendingUpload:
        """Start receiving the bytes of ``file_id``."""

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        """The stored file, ready to send, or None."""

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        """What is known of a stored file, or None."""

    def delete(self, file_id: str) -> Deferred[bool]:
        """Remove a stored file; True if there was one."""

    def list_ids(self) -> Deferred[set[str]]:
        """Every stored file id (start-up reconciliation)."""

    def free_space(self) -> Deferred[int | None]:
        """Bytes the backend can still take, None if it cannot tell."""


__all__ = ["FileInfo", "PendingUpload", "Storage", "StoredFile"]
