"""Stored files on a local filesystem.

Layout under the storage folder::

    tmp/<random>/data          an upload in progress
    files/<id[:2]>/<id>/data   a stored file
    files/<id[:2]>/<id>/info.json

An upload is written into its own folder under ``tmp/``; on commit the data
and its info are fsynced, and the folder is renamed into ``files/`` in one
step.  A rename onto an existing folder fails, which makes the commit
"create only": two PUTs racing for the same slot cannot overwrite each
other, and a reader sees either nothing or the whole file with its info.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Request

from httpupload.errors import AlreadyStored, StorageFull, UploadRefused
from httpupload.slots import FILE_ID_RE
from httpupload.storage import FileInfo, StoredFile
from httpupload.storage.sending import send_file

DATA = "data"
INFO = "info.json"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

log = Logger()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(error: OSError) -> UploadRefused:
    if error.errno in _FULL_ERRNOS:
        return StorageFull("Insufficient storage")
    return UploadRefused(f"Storage error: {error.strerror}")


class FilesystemUpload:
    """One upload being written to ``tmp/<random>/data``."""

    def __init__(self, storage: FilesystemStorage, file_id: str, folder: Path) -> None:
        self._storage = storage
        self._file_id = file_id
        self._folder = folder
        self._file: BinaryIO | None = open(folder / DATA, "xb")
        self._error: OSError | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        if self._file is None:
            return None
        try:
            self._file.write(data)
        except OSError as e:
            self._error = e
            self._close_quietly()
        return None

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
        return self._storage._in_thread(self._commit, info)

    def _commit(self, info: FileInfo) -> None:
        try:
            if self._error is None and self._file is not None:
                try:
                    self._file.flush()
                    os.fdatasync(self._file.fileno())
                except OSError as e:
                    self._error = e
            self._close_quietly()
            if self._error is not None:
                raise _write_error(self._error)
            try:
                self._storage._publish(self._folder, info)
            except OSError as e:
                raise _write_error(e) from None
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def abort(self) -> Deferred[None]:
        if self._done:
            return succeed(None)
        self._done = True
        self._close_quietly()
        return self._storage._in_thread(shutil.rmtree, self._folder, True)


class FilesystemFile:
    """A stored file, open: the kernel sends it where it can."""

    def __init__(self, info: FileInfo, handle: BinaryIO) -> None:
        self.info = info
        self._handle: BinaryIO | None = handle

    def send(self, request: Request, offset: int, length: int) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            raise RuntimeError("already sent or closed")
        send_file(request, handle, offset, length)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FilesystemStorage:
    """The ``Storage`` interface on a local folder."""

    def __init__(
        self, root: Path, reactor: IReactorFromThreads, threadpool: ThreadPool
    ) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._files = root / "files"
        self._reactor = reactor
        self._threadpool = threadpool
        self._free_cache: tuple[float, int] | None = None

    def prepare(self) -> int:
        """Create the folders and clear crash leftovers; returns how many.

        Called once at start-up, before the reactor runs and before anything
        listens, so no upload can be in flight: every partial in ``tmp/`` is
        a leftover (one process owns a storage folder).
        """
        for folder in (self.root, self._tmp, self._files):
            folder.mkdir(parents=True, exist_ok=True)
        probe = self._tmp / f".probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
        return self._remove_partials(older_than=float("inf"))

    def _in_thread(self, f, *args) -> Deferred:  # type: ignore[no-untyped-def]
        return deferToThreadPool(self._reactor, self._threadpool, f, *args)

    def _folder(self, file_id: str) -> Path | None:
        # Ids come from URLs: only the alphabet new_file_id() uses can
        # become a path, so no URL reaches outside the storage folder.
        if not FILE_ID_RE.fullmatch(file_id):
            return None
        return self._files / file_id[:2] / file_id

    def begin_write(self, file_id: str) -> FilesystemUpload:
        if self._folder(file_id) is None:
            raise ValueError(f"not a file id: {file_id!r}")
        folder = self._tmp / secrets.token_hex(16)
        try:
            folder.mkdir()
            return FilesystemUpload(self, file_id, folder)
        except OSError as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise _write_error(e) from None

    def _publish(self, folder: Path, info: FileInfo) -> None:
        final = self._folder(info.file_id)
        assert final is not None
        with open(folder / INFO, "x", encoding="utf-8") as f:
            json.dump(asdict(info), f, ensure_ascii=False)
            f.flush()
            os.fdatasync(f.fileno())
        _fsync_dir(folder)
        try:
            final.parent.mkdir()
            new_shard = True
        except FileExistsError:
            new_shard = False
        try:
            os.rename(folder, final)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise AlreadyStored("This slot has already been used") from None
            raise
        _fsync_dir(final.parent)
        if new_shard:  # a new shard's own entry must be durable too
            _fsync_dir(self._files)

    def _read_info(self, folder: Path) -> FileInfo | None:
        try:
            with open(folder / INFO, encoding="utf-8") as f:
                return FileInfo(**json.load(f))
        except FileNotFoundError:
            return None

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        folder = self._folder(file_id)
        if folder is None:
            return succeed(None)
        return self._in_thread(self._read_info, folder)

    def _open(self, folder: Path) -> FilesystemFile | None:
        info = self._read_info(folder)
        if info is None:
            return None
        try:
            return FilesystemFile(info, open(folder / DATA, "rb"))
        except FileNotFoundError:
            return None

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        folder = self._folder(file_id)
        if folder is None:
            return succeed(None)
        return self._in_thread(self._open, folder)

    def _delete(self, folder: Path) -> bool:
        doomed = self._tmp / f"deleted-{secrets.token_hex(16)}"
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def delete(self, file_id: str) -> Deferred[bool]:
        folder = self._folder(file_id)
        if folder is None:
            return succeed(False)
        return self._in_thread(self._delete, folder)

    def _list_ids(self) -> set[str]:
        ids = set()
        for shard in os.scandir(self._files):
            if shard.is_dir(follow_symlinks=False):
                for entry in os.scandir(shard.path):
                    if (
                        FILE_ID_RE.fullmatch(entry.name)
                        and (Path(entry.path) / INFO).exists()
                    ):
                        ids.add(entry.name)
        return ids

    def list_ids(self) -> Deferred[set[str]]:
        return self._in_thread(self._list_ids)

    def _free_space(self) -> int:
        stats = os.statvfs(self._files)
        return stats.f_bavail * stats.f_frsize

    def free_space(self) -> Deferred[int | None]:
        """Free bytes, measured at most once a second (slot requests ask often)."""
        now = self._reactor.seconds()  # type: ignore[attr-defined]
        if self._free_cache is not None and now - self._free_cache[0] < 1.0:
            return succeed(self._free_cache[1])

        def remember(free: int) -> int:
            self._free_cache = (now, free)
            return free

        return self._in_thread(self._free_space).addCallback(remember)

    def _remove_partials(self, older_than: float) -> int:
        removed = 0
        for entry in os.scandir(self._tmp):
            try:
                touched = entry.stat(follow_symlinks=False).st_mtime
                if entry.is_dir(follow_symlinks=False):
                    # A folder's mtime does not move while its data grows.
                    data = Path(entry.path) / DATA
                    if data.exists():
                        touched = max(touched, data.stat().st_mtime)
            except FileNotFoundError:
                continue
            if touched > older_than:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            removed += 1
        return removed

    def remove_partials(self, max_age: float = 0) -> Deferred[int]:
        """Throw away partial uploads untouched for ``max_age`` seconds."""
        return self._in_thread(self._remove_partials, time.time() - max_age)
