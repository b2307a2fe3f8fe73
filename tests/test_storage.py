"""The filesystem backend: nothing visible before commit, create-only commits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.test.requesthelper import DummyRequest

from httpupload.errors import AlreadyStored
from httpupload.slots import new_file_id
from httpupload.storage import FileInfo, StoredFile
from httpupload.storage.filesystem import FilesystemStorage


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
