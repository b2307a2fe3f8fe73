"""Stored files on a local filesystem.

Layout under the storage folder::

    tmp/<random>               an upload in progress
    partial/<id>               a slot's partial upload, kept to resume
    files/<id[:2]>/<id>        a stored file: its bytes, then its info

A stored file is one regular file: the uploaded bytes, then a trailer with
its info (``fileformat``: name, size, type, SHA-256, time as JSON, the
JSON's length and a magic tag).  An upload is written to its own file
under ``tmp/``; on commit the trailer is appended, the file is
fdatasynced, hard-linked into ``files/`` and the shard folder fsynced: two
syncs per file (the earlier layout, a folder with ``data`` and
``info.json``, took four; such folders are still read, served and
deleted).  A link onto an existing name fails, which makes the commit
"create only": two PUTs racing for the same slot cannot overwrite each
other, and a reader sees either nothing or the whole file with its info.

Nobody but the service's user reads what is stored: every folder is made
0700 and every file 0600, whatever the umask (explicit modes on ``mkdir``
and ``open``; the umask can only narrow them), and ``tighten_modes``
(``fileformat``) takes group and other access from what an earlier version
left readable.

Writes (``FilesystemUpload``, ``FilesystemPartialUpload``) are
``fs_writes``; the partial uploads' files ``partial_files``; the on-disk
format and the folder walks ``fileformat``; sending is ``sending``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from httpupload.errors import DuplicateFile
from httpupload.logs import redact
from httpupload.slots import FILE_ID_RE
from httpupload.storage import FileInfo, Sink, StoredFile
from httpupload.storage.fileformat import (
    _NOT_OWNERS,
    DATA,
    FILE_MODE,
    FOLDER_MODE,
    INFO,
    MAGIC,
    _fsync_dir,
    create_private,
    read_trailer,
    remove_partials,
    stored_ids,
    tighten_modes,
    trailer,
)
from httpupload.storage.fs_writes import (
    SYNC_EVERY,
    FilesystemPartialUpload,
    FilesystemUpload,
    write_error,
)
from httpupload.storage.partial_files import (
    discard,
    kept_sha256,
    kept_size,
)
from httpupload.storage.sending import send_file

log = Logger()

_P = ParamSpec("_P")
_T = TypeVar("_T")


class FilesystemFile:
    """A stored file, open: the kernel sends it where it can."""

    def __init__(self, info: FileInfo, handle: BinaryIO) -> None:
        self.info = info
        self._handle: BinaryIO | None = handle

    def send(self, sink: Sink, offset: int, length: int) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            raise RuntimeError("already sent or closed")
        send_file(sink, handle, offset, length)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FilesystemStorage:
    """The ``Storage`` interface on a local folder.

    ``reactor`` also provides ``IReactorTime`` (every reactor does, as does
    ``MemoryReactorClock``).  ``sync`` makes a file's written bytes durable
    (``os.fdatasync``; a test passes its own to see when syncs happen); it
    runs in ``threadpool``, as does every other blocking call.
    """

    def __init__(
        self,
        root: Path,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool,
        *,
        sync: Callable[[int], None] = os.fdatasync,
    ) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._partial = root / "partial"
        self._files = root / "files"
        self._reactor = reactor
        self._clock = IReactorTime(reactor)
        self._threadpool = threadpool
        self.sync = sync
        self._free_cache: tuple[float, int] | None = None

    def start(self) -> Deferred[None]:
        """Nothing to start: ``prepare`` made the folders before the reactor ran."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to release: every file is closed once sent or committed."""
        return succeed(None)

    def prepare(self) -> int:
        """Create the folders and clear crash leftovers; returns how many.

        Called once at start-up, before the reactor runs and before anything
        listens, so no upload can be in flight: every partial in ``tmp/`` is
        a leftover (one process owns a storage folder).
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        self._close_root()
        for folder in (self._tmp, self._partial, self._files):
            folder.mkdir(exist_ok=True, mode=FOLDER_MODE)
        probe = self._tmp / f".probe-{secrets.token_hex(4)}"
        create_private(probe).close()
        probe.unlink()
        return self._remove_partials(older_than=float("inf"))

    def _close_root(self) -> None:
        """Close the folder to others at once; what is inside is tightened
        in a thread (``tighten_modes``) once the reactor runs."""
        mode = stat.S_IMODE(self.root.stat().st_mode)
        if not mode & _NOT_OWNERS:
            return
        try:
            os.chmod(self.root, mode & ~_NOT_OWNERS)
        except PermissionError:
            log.warn(
                "{root} is open to other users (mode {mode:o}) and not ours to "
                "change: make it owner-only (chmod 700)",
                root=self.root,
                mode=mode,
            )

    def _in_thread(
        self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._threadpool, f, *args, **kwargs)

    def _path(self, file_id: str) -> Path | None:
        # Ids come from URLs: only the alphabet new_file_id() uses can
        # become a path, so no URL reaches outside the storage folder.
        if not FILE_ID_RE.fullmatch(file_id):
            return None
        return self._files / file_id[:2] / file_id

    def begin_write(self, file_id: str) -> FilesystemUpload:
        if self._path(file_id) is None:
            raise ValueError(f"not a file id: {file_id!r}")
        try:
            return FilesystemUpload(self, file_id, self._tmp / secrets.token_hex(16))
        except OSError as e:
            raise write_error(e) from None

    def begin_partial(self, file_id: str, offset: int) -> FilesystemPartialUpload:
        if self._path(file_id) is None:
            raise ValueError(f"not a file id: {file_id!r}")
        try:
            return FilesystemPartialUpload(
                self, file_id, self._partial / file_id, offset
            )
        except FileNotFoundError:
            raise ValueError("no partial upload is kept") from None
        except OSError as e:
            raise write_error(e) from None

    def partial_size(self, file_id: str) -> Deferred[int | None]:
        if self._path(file_id) is None:
            return succeed(None)
        return self._in_thread(kept_size, self._partial / file_id)

    def partial_sha256(self, file_id: str, length: int) -> Deferred[hashlib._Hash]:
        if self._path(file_id) is None:
            raise ValueError(f"not a file id: {file_id!r}")
        return self._in_thread(kept_sha256, self._partial / file_id, length)

    def discard_partial(self, file_id: str) -> Deferred[bool]:
        if self._path(file_id) is None:
            return succeed(False)
        return self._in_thread(discard, self._partial / file_id)

    def _publish(self, written: Path, file_id: str) -> None:
        final = self._path(file_id)
        assert final is not None
        try:
            final.parent.mkdir(mode=FOLDER_MODE)
            new_shard = True
        except FileExistsError:
            new_shard = False
        try:
            # A link, unlike a rename, never replaces what is there (a file,
            # or a stored file of the folder layout).
            os.link(written, final)
        except FileExistsError:
            raise DuplicateFile("This slot has already been used") from None
        _fsync_dir(final.parent)
        if new_shard:  # a new shard's own entry must be durable too
            _fsync_dir(self._files)

    def _open(self, path: Path) -> FilesystemFile | None:
        """The stored file at ``path`` (either layout), or None."""
        try:
            handle: BinaryIO = open(path, "rb")
        except IsADirectoryError:
            return self._open_folder(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            info = read_trailer(handle)
        except BaseException:
            handle.close()
            raise
        if info is None:
            handle.close()
            log.warn(
                "Stored file {path} has no valid info; not served",
                path=redact(str(path)),
            )
            return None
        return FilesystemFile(info, handle)

    def _open_folder(self, folder: Path) -> FilesystemFile | None:
        try:
            with open(folder / INFO, encoding="utf-8") as f:
                info = FileInfo(**json.load(f))
            return FilesystemFile(info, open(folder / DATA, "rb"))
        except FileNotFoundError:
            return None

    def _stat(self, path: Path) -> FileInfo | None:
        opened = self._open(path)
        if opened is None:
            return None
        opened.close()
        return opened.info

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        path = self._path(file_id)
        if path is None:
            return succeed(None)
        return self._in_thread(self._stat, path)

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        path = self._path(file_id)
        if path is None:
            return succeed(None)
        return self._in_thread(self._open, path)

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            pass
        # The folder layout: out of sight in one step, then removed.
        doomed = self._tmp / f"deleted-{secrets.token_hex(16)}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def delete(self, file_id: str) -> Deferred[bool]:
        path = self._path(file_id)
        if path is None:
            return succeed(False)
        return self._in_thread(self._delete, path)

    def list_ids(self) -> Deferred[set[str]]:
        return self._in_thread(stored_ids, self._files)

    def _free_space(self) -> int:
        stats = os.statvfs(self._files)
        return stats.f_bavail * stats.f_frsize

    def free_space(self) -> Deferred[int | None]:
        """Free bytes, measured at most once a second (slot requests ask often)."""
        now = self._clock.seconds()
        if self._free_cache is not None and now - self._free_cache[0] < 1.0:
            return succeed(self._free_cache[1])

        def remember(free: int) -> int:
            self._free_cache = (now, free)
            return free

        return self._in_thread(self._free_space).addCallback(remember)

    def _remove_partials(self, older_than: float) -> int:
        return remove_partials(self._tmp, older_than)

    def tighten_modes(self) -> Deferred[tuple[int, int]]:
        """``tighten_modes`` of the storage folder, in a thread."""
        return self._in_thread(tighten_modes, self.root)

    def remove_partials(self, max_age: float = 0) -> Deferred[int]:
        """Throw away partial uploads untouched for ``max_age`` seconds."""
        return self._in_thread(self._remove_partials, time.time() - max_age)


# With the on-disk format's names (from fileformat), which callers use.
__all__ = ["DATA", "FILE_MODE", "FOLDER_MODE", "INFO", "MAGIC", "SYNC_EVERY"]
__all__ += ["FilesystemFile", "FilesystemStorage", "FilesystemUpload"]
__all__ += ["FilesystemPartialUpload"]
__all__ += ["create_private", "read_trailer", "tighten_modes", "trailer"]
