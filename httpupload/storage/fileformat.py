"""A stored file on disk, and the modes of the storage folder.

A stored file is one regular file: the uploaded bytes, then a trailer with
its info (``FileInfo`` as JSON), the JSON's length and a magic tag, so one
sync keeps both.  Files of earlier versions were a folder holding ``data``
and ``info.json``; they are still read (``filesystem``).  Every folder is
made 0700 and every file 0600, whatever the umask.

Blocking: ``filesystem`` calls these in its thread pool (or, for
``remove_partials`` at start-up, before the reactor runs).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from httpupload.slots import FILE_ID_RE
from httpupload.storage import FileInfo

# The folder layout of earlier versions, still read.
DATA = "data"
INFO = "info.json"
MAGIC = b"HUPINFO1"
_TRAILER = struct.Struct(">Q8s")  # length of the JSON, then MAGIC
# Owner-only: stored files and folders hold uploads and capability URLs.
FILE_MODE = 0o600
FOLDER_MODE = 0o700
_NOT_OWNERS = 0o077


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path) -> BinaryIO:
    """A new file at ``path``, open for writing, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    return os.fdopen(fd, "wb")


def tighten_modes(root: Path) -> tuple[int, int]:
    """Take group and other access from everything under ``root`` (and itself).

    Blocking (a walk of the whole folder): run it in a thread.  Symbolic
    links are neither followed nor changed.  Returns how many entries were
    tightened and how many could not be (owned by someone else).
    """
    tightened = failed = 0

    def tighten(path: str) -> None:
        nonlocal tightened, failed
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not mode & _NOT_OWNERS:
                return
            os.chmod(path, stat.S_IMODE(mode) & ~_NOT_OWNERS, follow_symlinks=False)
            tightened += 1
        except FileNotFoundError:
            pass  # gone meanwhile (an upload finished, a file expired)
        except OSError:
            failed += 1

    tighten(str(root))
    for folder, folders, files in os.walk(root):
        for name in (*folders, *files):
            tighten(os.path.join(folder, name))
    return tightened, failed


def trailer(info: FileInfo) -> bytes:
    """What follows a stored file's bytes: its info, so one sync keeps both."""
    text = json.dumps(asdict(info), ensure_ascii=False).encode("utf-8")
    return text + _TRAILER.pack(len(text), MAGIC)


def read_trailer(handle: BinaryIO) -> FileInfo | None:
    """The info at the end of a stored file, or None if it has none."""
    total = handle.seek(0, os.SEEK_END)
    if total < _TRAILER.size:
        return None
    handle.seek(total - _TRAILER.size)
    length, magic = _TRAILER.unpack(handle.read(_TRAILER.size))
    if magic != MAGIC or length > total - _TRAILER.size:
        return None
    handle.seek(total - _TRAILER.size - length)
    info = FileInfo(**json.loads(handle.read(length).decode("utf-8")))
    if info.size != total - _TRAILER.size - length:
        return None
    handle.seek(0)
    return info


def stored_ids(files: Path) -> set[str]:
    """The id of every stored file under ``files/`` (either layout)."""
    ids = set()
    for shard in os.scandir(files):
        if shard.is_dir(follow_symlinks=False):
            for entry in os.scandir(shard.path):
                if not FILE_ID_RE.fullmatch(entry.name):
                    continue
                if entry.is_file(follow_symlinks=False) or (
                    entry.is_dir(follow_symlinks=False)
                    and (Path(entry.path) / INFO).exists()
                ):
                    ids.add(entry.name)
    return ids


def remove_partials(tmp: Path, older_than: float) -> int:
    """Remove what ``tmp/`` holds untouched since ``older_than``; how many."""
    removed = 0
    for entry in os.scandir(tmp):
        try:
            touched = entry.stat(follow_symlinks=False).st_mtime
            if entry.is_dir(follow_symlinks=False):
                # An upload folder of the earlier layout: a folder's
                # mtime does not move while its data grows.
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
