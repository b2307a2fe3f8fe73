"""Where uploaded bytes live, behind one small asynchronous interface.

Backends: a local filesystem, S3-compatible object storage and (for tests
and embedders) memory; nothing above this package may assume a local path.
Storage knows nothing of HTTP: a stored file is sent into a ``Sink`` (a
consumer that can be finished or cut, which a twisted.web ``Request`` is),
and failures are ``StorageError``s (``httpupload.errors``), which the web
layer turns into statuses.

Per-chunk writes are synchronous calls (they happen inline on the data
path, as twisted.web's own body handling does) but a backend that cannot
keep up says so by returning a Deferred, and the caller stops reading the
body until it fires.  Everything that can stall (fsync, renames, opening
for read, deleting, remote calls) returns a Deferred.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProducer


@dataclass(frozen=True)
class FileInfo:
    """What is kept with a stored file and served with it."""

    file_id: str
    filename: str
    size: int
    content_type: str
    sha256: str
    created: float


class Sink(Protocol):
    """Where ``StoredFile.send`` writes: a consumer that is finished or cut.

    A twisted.web ``Request`` is one, as it stands (its status and headers
    set).  ``sentLength`` counts what went out behind ``write``'s back (the
    kernel's ``sendfile``).  ``channel`` is the connection the sink writes
    to, or None once it is gone (or for a sink with none); storage never
    looks inside it: ``httpupload._twisted_private`` does, to find the
    clock and idle timeout of the download watchdog and the TCP transport
    that ``sendfile`` writes to.
    """

    sentLength: int

    @property
    def channel(self) -> object:
        """The connection written to; None once the client has gone."""

    def write(self, data: bytes) -> None:
        """Send bytes (after the head, which the first write sends)."""

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Let ``producer`` be paused and resumed at the client's pace."""

    def unregisterProducer(self) -> None:
        """The producer is done (or gone)."""

    def finish(self) -> None:
        """Every byte is sent: end the response."""

    def loseConnection(self) -> None:
        """Close the connection (a response that cannot be ended whole)."""

    def notifyFinish(self) -> Deferred[None]:
        """Fires when the response ends; fails when the client goes away first."""


class PendingUpload(Protocol):
    """A write in progress: nothing is visible until ``commit`` succeeds."""

    def write(self, data: bytes) -> Deferred[None] | None:
        """Append a chunk; errors are remembered and raised by ``commit``.

        None: send more at once.  A Deferred: the backend is behind (parts
        still on their way to an object store, say); the caller stops reading
        the body until it fires.  It never fails.
        """

    def commit(self, info: FileInfo) -> Deferred[None]:
        """Make the file durable and visible.

        Fails with ``DuplicateFile`` if the id is stored already (nothing
        changes), ``NoSpace``, ``StoreDown`` or ``StorageFailed``; a failed
        commit leaves nothing behind.
        """

    def abort(self) -> Deferred[None]:
        """Throw the partial file away; safe to call more than once."""


class StoredFile(Protocol):
    """A stored file opened for reading: its info now, its bytes on ``send``."""

    info: FileInfo

    def send(self, sink: Sink, offset: int, length: int) -> None:
        """Write ``length`` bytes from ``offset`` into ``sink``, then finish it.

        Honours the sink's flow control (a producer registered on it); if
        the bytes cannot be had midway, the connection is cut rather than
        the response ended as if whole.  Releases the file when done or
        when the client goes away.
        """

    def close(self) -> None:
        """Release the file without sending it (HEAD, 304, 416, a refusal)."""


class Storage(Protocol):
    """A backend: files written once, read, listed and deleted by id."""

    def start(self) -> Deferred[None]:
        """Get ready to serve (credentials, say); called once the reactor runs.

        Fails if the backend cannot work; a backend with nothing to do
        returns a fired Deferred.
        """

    def close(self) -> Deferred[None]:
        """Release what the backend holds (pooled connections) at shutdown."""

    def begin_write(self, file_id: str) -> PendingUpload:
        """Start receiving the bytes of ``file_id``.

        ``ValueError`` for an id outside the file id alphabet; a
        ``StorageError`` if no write can start (a full disk).
        """

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


@runtime_checkable
class KeptUpload(PendingUpload, Protocol):
    """A write into a slot's partial upload, which can outlive the request.

    Besides ``commit`` and ``abort``, it can be *kept*: what was written is
    made durable and left for a later request to append to (a body that
    broke off, or an append that ended before the upload's end).
    """

    def keep(self) -> Deferred[int]:
        """Stop writing; make what was written durable and resumable.

        Fires with the bytes the partial upload now holds (its offset).
        Safe once; after ``commit`` or ``abort`` it does nothing and fires
        with 0.
        """


@runtime_checkable
class KeepsPartials(Protocol):
    """A ``Storage`` that keeps partial uploads, so that uploads can resume.

    One partial upload per file id at most; it never becomes visible as a
    stored file until ``commit``.  Bytes once kept are never changed: a
    write at ``offset`` appends after exactly that many kept bytes (it may
    drop bytes past ``offset`` kept by a write nobody acknowledged), and a
    write at 0 starts afresh.
    """

    def begin_partial(self, file_id: str, offset: int) -> KeptUpload:
        """Write into ``file_id``'s partial upload from ``offset``.

        ``ValueError`` for an id outside the alphabet, or an ``offset``
        past what is kept; a ``StorageError`` if no write can start.
        """

    def partial_size(self, file_id: str) -> Deferred[int | None]:
        """Bytes kept of ``file_id``'s partial upload, None if there is none."""

    def partial_sha256(self, file_id: str, length: int) -> Deferred[hashlib._Hash]:
        """SHA-256 state over the first ``length`` kept bytes (to go on hashing).

        Reads them back: the price of resuming where the hash state was lost
        (another process, or a restart).  Fails with ``ValueError`` if fewer
        are kept.
        """

    def discard_partial(self, file_id: str) -> Deferred[bool]:
        """Throw a partial upload away; True if there was one."""


__all__ = [
    "FileInfo",
    "KeepsPartials",
    "KeptUpload",
    "PendingUpload",
    "Sink",
    "Storage",
    "StoredFile",
]
