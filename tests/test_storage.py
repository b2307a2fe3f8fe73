"""The filesystem backend: its layout, its trailer, its syncs, its errors.

What every backend does (nothing visible before commit, create-only
commits, abort, delete, listing, sending) is ``test_storage_contract.py``'s.
Here the storage's "threads" run inline (``storage_fakes``): no thread, no
reactor, every Deferred fired when the call returns.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from storage_fakes import Reader, inline_filesystem

from httpupload.errors import DuplicateFile, NoSpace, StorageFailed
from httpupload.slots import new_file_id
from httpupload.storage import FileInfo, StoredFile, fs_writes
from httpupload.storage.filesystem import FilesystemStorage, read_trailer, trailer


@pytest.fixture
def storage(tmp_path: Path) -> FilesystemStorage:
    """A prepared filesystem storage whose Deferreds fire at once."""
    return inline_filesystem(tmp_path / "store")[0]


def read_back(stored: StoredFile) -> bytes:
    """Everything ``send`` writes into a sink that reads it all."""
    reader = Reader(window=1 << 30)
    stored.send(reader, 0, stored.info.size)
    assert reader.finished == 1
    return bytes(reader.received)


def info(file_id: str, data: bytes) -> FileInfo:
    return FileInfo(file_id, "a.bin", len(data), "application/octet-stream", "00", 1.0)


@pytest_twisted.ensureDeferred
async def test_partials_are_removed_by_age(storage: FilesystemStorage) -> None:
    """Partials older than the bound go; younger ones (in flight) stay."""
    # What a crash leaves: a partial folder nobody writes to any more.
    stale_folder = storage.root / "tmp" / "0123456789abcdef"
    stale_folder.mkdir()
    (stale_folder / "data").write_bytes(b"old")
    live = storage.begin_write(new_file_id())
    live.write(b"new")
    old = time.time() - 3600
    os.utime(stale_folder / "data", (old, old))
    os.utime(stale_folder, (old, old))
    assert await storage.remove_partials(max_age=60) == 1
    assert not stale_folder.exists()
    assert len(list((storage.root / "tmp").iterdir())) == 1
    # At start-up (max_age=0) every partial is a leftover.
    assert await storage.remove_partials() == 1
    assert list((storage.root / "tmp").iterdir()) == []
    await live.abort()


@pytest_twisted.ensureDeferred
async def test_one_file_per_stored_file(storage: FilesystemStorage) -> None:
    """The bytes and their info live in one file; stat reads the info back."""
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    upload.write(b"payload")
    await upload.commit(info(file_id, b"payload"))
    path = storage.root / "files" / file_id[:2] / file_id
    assert path.is_file()
    with open(path, "rb") as handle:
        assert read_trailer(handle) == info(file_id, b"payload")
        assert handle.read(7) == b"payload"
    assert await storage.stat(file_id) == info(file_id, b"payload")
    assert await storage.list_ids() == {file_id}


@pytest_twisted.ensureDeferred
async def test_folder_layout_still_served(storage: FilesystemStorage) -> None:
    """Files stored by earlier versions (a folder: data + info.json) still work."""
    file_id = new_file_id()
    folder = storage.root / "files" / file_id[:2] / file_id
    folder.mkdir(parents=True)
    (folder / "data").write_bytes(b"old bytes")
    (folder / "info.json").write_text(
        json.dumps(asdict(info(file_id, b"old bytes"))), encoding="utf-8"
    )
    assert await storage.list_ids() == {file_id}
    assert await storage.stat(file_id) == info(file_id, b"old bytes")
    stored = await storage.open_read(file_id)
    assert stored is not None
    assert read_back(stored) == b"old bytes"
    # A new upload under the same id does not replace it.
    upload = storage.begin_write(file_id)
    upload.write(b"new")
    with pytest.raises(DuplicateFile):
        await upload.commit(info(file_id, b"new"))
    assert await storage.delete(file_id) is True
    assert not folder.exists()
    assert await storage.list_ids() == set()


@pytest_twisted.ensureDeferred
async def test_a_file_without_a_whole_trailer_is_not_served(
    storage: FilesystemStorage,
) -> None:
    """A truncated or foreign file in files/ is never served as if whole."""
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    upload.write(b"0123456789")
    await upload.commit(info(file_id, b"0123456789"))
    path = storage.root / "files" / file_id[:2] / file_id
    whole = path.read_bytes()
    for cut in (whole[:-1], whole[:10], b"", whole[:-8] + b"XXXXXXXX"):
        path.write_bytes(cut)
        assert await storage.open_read(file_id) is None
        assert await storage.stat(file_id) is None


@given(
    data=st.binary(max_size=64),
    name=st.text(min_size=1, max_size=40),
    content_type=st.text(max_size=40),
    created=st.floats(min_value=0, max_value=2e9),
)
def test_trailer_round_trip(
    data: bytes, name: str, content_type: str, created: float
) -> None:
    """Any info written after any bytes reads back the same, and the bytes too."""
    file_info = FileInfo("a" * 32, name, len(data), content_type, "ab" * 32, created)
    handle = io.BytesIO(data + trailer(file_info))
    assert read_trailer(handle) == file_info
    assert handle.read(len(data)) == data


@pytest_twisted.ensureDeferred
async def test_large_uploads_are_synced_as_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs of a large upload run while bytes arrive; commit syncs the rest
    and abort waits for a sync before closing the file."""
    synced: list[int] = []

    def sync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        os.fdatasync(fd)

    monkeypatch.setattr(fs_writes, "SYNC_EVERY", 10)
    storage, _ = inline_filesystem(tmp_path / "store", sync=sync)
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    for _ in range(5):
        upload.write(b"0123456789")
    assert synced and synced[0] < 50  # one while arriving
    await upload.commit(info(file_id, b"0123456789" * 5))
    assert synced[-1] == 50 + len(trailer(info(file_id, b"0123456789" * 5)))
    stored = await storage.open_read(file_id)
    assert stored is not None and read_back(stored) == b"0123456789" * 5

    before = len(synced)
    aborted = storage.begin_write(new_file_id())
    aborted.write(b"x" * 20)  # starts a sync
    assert len(synced) == before + 1
    await aborted.abort()
    assert list((storage.root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("code", "kind"),
    [(errno.ENOSPC, NoSpace), (errno.EDQUOT, NoSpace), (errno.EIO, StorageFailed)],
)
@pytest_twisted.ensureDeferred
async def test_a_failed_sync_fails_the_commit_with_a_storage_error(
    tmp_path: Path, code: int, kind: type[Exception]
) -> None:
    """A full disk (or quota) is NoSpace, any other I/O error StorageFailed."""

    def sync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    storage, _ = inline_filesystem(tmp_path / "store", sync=sync)
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    upload.write(b"data")
    with pytest.raises(kind):
        await upload.commit(info(file_id, b"data"))
    assert await storage.stat(file_id) is None
    assert list((storage.root / "tmp").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_a_commit_onto_a_stored_id_is_a_duplicate(
    storage: FilesystemStorage,
) -> None:
    """The link that publishes a file never replaces one: DuplicateFile."""
    file_id = new_file_id()
    for data in (b"first", b"second"):
        upload = storage.begin_write(file_id)
        upload.write(data)
        if data == b"first":
            await upload.commit(info(file_id, data))
    with pytest.raises(DuplicateFile):
        await upload.commit(info(file_id, b"second"))


def test_the_storage_protocols_load_nothing_of_twisted_web() -> None:
    """``import httpupload.storage`` (the protocols) imports no twisted.web module."""
    code = (
        "import sys, httpupload.storage; "
        "print(sorted(m for m in sys.modules if m.startswith('twisted.web')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
