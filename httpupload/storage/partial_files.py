"""The files of partial uploads on a filesystem: ``partial/<id>``, kept to resume.

Blocking calls, run in the storage's thread pool (``FilesystemStorage``),
except ``open_partial``, which opens the write inline as every upload's
write-open is (docs/design.md).  Bytes once kept are never rewritten: a
write at an offset cuts what lies past it (bytes nobody acknowledged) and
appends; a write at 0 starts a new file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from httpupload.storage.fileformat import create_private

READ_BACK_CHUNK = 1024 * 1024


def open_partial(path: Path, offset: int) -> BinaryIO:
    """``path`` open for writing at ``offset``: new at 0, else cut to ``offset``."""
    if offset == 0:
        path.unlink(missing_ok=True)
        return create_private(path)
    handle = open(path, "r+b")
    try:
        kept = handle.seek(0, os.SEEK_END)
        if offset > kept:
            raise ValueError(f"offset {offset} is past the {kept} bytes kept")
        handle.truncate(offset)
        handle.seek(offset)
    except BaseException:
        handle.close()
        raise
    return handle


def kept_size(path: Path) -> int | None:
    """Bytes kept at ``path``, None if nothing is."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def kept_sha256(path: Path, length: int) -> hashlib._Hash:
    """The SHA-256 state over the first ``length`` kept bytes (read back)."""
    digest = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left and (chunk := f.read(min(left, READ_BACK_CHUNK))):
            digest.update(chunk)
            left -= len(chunk)
    if left:
        raise ValueError("fewer bytes are kept")
    return digest


def discard(path: Path) -> bool:
    """Remove a partial upload; True if there was one."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


__all__ = ["discard", "kept_sha256", "kept_size", "open_partial"]
