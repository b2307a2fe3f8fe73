"""Writing an upload on a local filesystem: ``tmp/<random>`` or ``partial/<id>``.

``FilesystemStorage`` (``httpupload.storage.filesystem``) makes these and
publishes what they commit; the layout and its guarantees are described
there.  A partial upload's write can be *kept* (``keep``): synced and left
for a later append.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from httpupload.errors import NoSpace, StorageError, StorageFailed
from httpupload.storage import FileInfo
from httpupload.storage.fileformat import create_private, trailer
from httpupload.storage.partial_files import open_partial

if TYPE_CHECKING:
    from httpupload.storage.filesystem import FilesystemStorage

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A large upload is synced in the background every this many bytes.
SYNC_EVERY = 32 * 1024 * 1024

log = Logger()


def write_error(error: OSError) -> StorageError:
    if error.errno in _FULL_ERRNOS:
        return NoSpace("Insufficient storage")
    return StorageFailed(f"Storage error: {error.strerror}")


class FilesystemUpload:
    """One upload being written to ``tmp/<random>``."""

    def __init__(self, storage: FilesystemStorage, file_id: str, path: Path) -> None:
        self._storage = storage
        self._file_id = file_id
        self._path = path
        self._file: BinaryIO | None = create_private(path)
        self._error: OSError | None = None
        self._done = False
        self._unsynced = 0
        # A sync of what is written so far, running in a thread.
        self._syncing: Deferred[None] | None = None

    def write(self, data: bytes) -> None:
        if self._file is None or self._error is not None:
            return None
        try:
            self._file.write(data)
        except OSError as e:
            # Closed by commit or abort, once no sync uses the descriptor.
            self._error = e
            return None
        self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY and self._syncing is None:
            self._sync_so_far()
        return None

    def _sync_so_far(self) -> None:
        """Start writing a large upload to disk while it arrives.

        The final sync then has little left to do, and the page cache never
        fills with one upload's dirty pages (which would stall write() on
        the reactor thread).
        """
        assert self._file is not None
        self._unsynced = 0
        try:
            self._file.flush()
        except OSError as e:
            self._error = e
            return
        syncing = self._storage._in_thread(self._storage.sync, self._file.fileno())

        def done(result: object) -> None:
            self._syncing = None
            if isinstance(result, Failure) and isinstance(result.value, OSError):
                self._error = self._error or result.value
            elif isinstance(result, Failure):
                log.failure("Syncing an upload in progress failed", result)

        syncing.addBoth(done)
        self._syncing = syncing

    def _settled(self) -> Deferred[None]:
        """Fires once no sync is running on the file (before it is closed)."""
        if self._syncing is None:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._syncing.addBoth(lambda _: waiting.callback(None))
        return waiting

    def _close_quietly(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                self._error = self._error or e
            self._file = None

    def commit(self, info: FileInfo) -> Deferred[None]:
        if self._done:
            raise RuntimeError("upload already committed or aborted")
        self._done = True
        return self._settled().addCallback(
            lambda _: self._storage._in_thread(self._commit, info)
        )

    def _commit(self, info: FileInfo) -> None:
        try:
            if self._error is None and self._file is not None:
                try:
                    self._file.write(trailer(info))
                    self._file.flush()
                    self._storage.sync(self._file.fileno())
                except OSError as e:
                    self._error = e
            self._close_quietly()
            if self._error is not None:
                raise write_error(self._error)
            try:
                self._storage._publish(self._path, info.file_id)
            except OSError as e:
                raise write_error(e) from None
        finally:
            self._path.unlink(missing_ok=True)

    def abort(self) -> Deferred[None]:
        if self._done:
            return succeed(None)
        self._done = True

        def discard(_: object) -> Deferred[None]:
            self._close_quietly()
            return self._storage._in_thread(self._path.unlink, True)

        return self._settled().addCallback(discard)


class FilesystemPartialUpload(FilesystemUpload):
    """A write into ``partial/<id>``, which ``keep`` leaves for a later append."""

    def __init__(
        self, storage: FilesystemStorage, file_id: str, path: Path, offset: int
    ) -> None:
        self._storage = storage
        self._file_id = file_id
        self._path = path
        self._file = open_partial(path, offset)
        self._error = None
        self._done = False
        self._unsynced = 0
        self._syncing = None

    def keep(self) -> Deferred[int]:
        if self._done:
            return succeed(0)
        self._done = True
        return self._settled().addCallback(
            lambda _: self._storage._in_thread(self._keep)
        )

    def _keep(self) -> int:
        if self._file is not None and self._error is None:
            try:
                self._file.flush()
                self._storage.sync(self._file.fileno())
            except OSError as e:
                self._error = e
        self._close_quietly()
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0


__all__ = ["SYNC_EVERY", "FilesystemPartialUpload", "FilesystemUpload", "write_error"]
