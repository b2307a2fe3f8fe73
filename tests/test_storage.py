"""The filesystem backend: nothing visible before commit, create-only commits."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.web.test.requesthelper import DummyRequest

from httpupload.errors import AlreadyStored
from httpupload.slots import new_file_id
from httpupload.storage import FileInfo, StoredFile
from httpupload.storage.filesystem import FilesystemStorage, read_trailer, trailer


@pytest.fixture
def storage(tmp_path: Path) -> FilesystemStorage:
    s = FilesystemStorage(tmp_path / "store", reactor, reactor.getThreadPool())
    s.prepare()
    return s


def read_back(stored: StoredFile) -> bytes:
    """Everything ``send`` writes into a request."""
    request = DummyRequest([b""])
    stored.send(request, 0, stored.info.size)
    assert request.finished
    return b"".join(request.written)


def info(file_id: str, data: bytes) -> FileInfo:
    return FileInfo(file_id, "a.bin", len(data), "application/octet-stream", "00", 1.0)


@pytest_twisted.ensureDeferred
async def test_nothing_visible_until_commit(storage: FilesystemStorage) -> None:
    """A write in progress cannot be read; after commit it reads back whole."""
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    upload.write(b"hello ")
    assert await storage.stat(file_id) is None
    assert await storage.open_read(file_id) is None
    upload.write(b"world")
    await upload.commit(info(file_id, b"hello world"))
    stored = await storage.open_read(file_id)
    assert stored is not None
    assert read_back(stored) == b"hello world"
    assert stored.info == info(file_id, b"hello world")
    assert list((storage.root / "tmp").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_commit_is_create_only(storage: FilesystemStorage) -> None:
    """Of two writes to the same id, the second commit fails and changes nothing."""
    file_id = new_file_id()
    first, second = storage.begin_write(file_id), storage.begin_write(file_id)
    first.write(b"first")
    second.write(b"other")
    await first.commit(info(file_id, b"first"))
    with pytest.raises(AlreadyStored):
        await second.commit(info(file_id, b"other"))
    stored = await storage.open_read(file_id)
    assert stored is not None
    assert read_back(stored) == b"first"
    assert list((storage.root / "tmp").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_abort_removes_the_partial(storage: FilesystemStorage) -> None:
    """Aborting throws the partial file away, and may be repeated."""
    upload = storage.begin_write(new_file_id())
    upload.write(b"partial")
    await upload.abort()
    await upload.abort()
    assert list((storage.root / "tmp").iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_delete(storage: FilesystemStorage) -> None:
    """A deleted file is gone; deleting again reports there was nothing."""
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    upload.write(b"x")
    await upload.commit(info(file_id, b"x"))
    assert await storage.delete(file_id) is True
    assert await storage.stat(file_id) is None
    assert await storage.delete(file_id) is False


@pytest_twisted.ensureDeferred
async def test_ids_outside_the_alphabet_never_touch_the_disk(
    storage: FilesystemStorage,
) -> None:
    """Ids that could name another path are not looked up at all."""
    for bad in ("..", "../../etc", "a/b", "", "x" * 200):
        assert await storage.stat(bad) is None
        assert await storage.open_read(bad) is None
        assert await storage.delete(bad) is False
        with pytest.raises(ValueError):
            storage.begin_write(bad)


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
    with pytest.raises(AlreadyStored):
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
    storage: FilesystemStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs run in the background while bytes arrive; commit and abort wait
    for them before closing the file."""
    from httpupload.storage import filesystem

    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fdatasync(fd)

    monkeypatch.setattr(filesystem, "SYNC_EVERY", 10)
    monkeypatch.setattr(filesystem.os, "fdatasync", fdatasync)
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    for _ in range(5):
        upload.write(b"0123456789")
    await upload.commit(info(file_id, b"0123456789" * 5))
    assert len(synced) >= 2  # at least one while arriving, and the last
    assert synced[0] < 50 + len(trailer(info(file_id, b"0123456789" * 5)))
    stored = await storage.open_read(file_id)
    assert stored is not None and read_back(stored) == b"0123456789" * 5

    aborted = storage.begin_write(new_file_id())
    aborted.write(b"x" * 20)  # starts a sync
    await aborted.abort()
    assert list((storage.root / "tmp").iterdir()) == []
