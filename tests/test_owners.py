"""Owner and operator operations: file before record, URLs that must match."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from httpupload.expiry import reconcile
from httpupload.metadata import FileRecord
from httpupload.metadata.sqlite import SQLiteMetadataStore
from httpupload.owners import Uploads
from httpupload.policy import SlotPolicy
from httpupload.slots import new_file_id, url_path
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemStorage

BASE = "https://upload.example.org/"
POLICY = SlotPolicy(10**9, ("example.org",))


@pytest_twisted.async_yield_fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    clock = Clock()
    clock.advance(1_700_000_000)
    storage = FilesystemStorage(tmp_path / "s", reactor, reactor.getThreadPool())
    storage.prepare()
    store = SQLiteMetadataStore(tmp_path / "s" / "metadata.sqlite", reactor)
    await store.start()
    yield Uploads(store, storage, POLICY, BASE, clock)
    await store.stop()


async def stored(uploads: Uploads, owner: str, name: str = "a.txt") -> str:
    file_id = new_file_id()
    now = uploads.clock.seconds()
    await uploads.metadata.reserve(
        FileRecord(file_id, owner, name, 3, None, "message", now, now + 300, None),
        86400,
        lambda usage: None,
    )
    pending = uploads.storage.begin_write(file_id)
    pending.write(b"abc")
    await pending.commit(FileInfo(file_id, name, 3, "text/plain", "00" * 32, now))
    await uploads.metadata.complete(file_id, "00" * 32, "text/plain", now)
    return file_id


@pytest_twisted.ensureDeferred
async def test_list_and_delete_only_own_files(uploads: Uploads) -> None:
    """Owners see their files with GET URLs; they cannot delete others' files."""
    mine = await stored(uploads, "romeo@example.org", "très.txt")
    theirs = await stored(uploads, "juliet@example.org")
    (listed,) = await uploads.list("romeo@example.org")
    assert listed.url == BASE + url_path(mine, "très.txt")
    assert await uploads.delete("romeo@example.org", theirs) is None
    assert await uploads.storage.stat(theirs) is not None
    assert (await uploads.delete("romeo@example.org", mine)).file_id == mine  # type: ignore[union-attr]
    assert await uploads.storage.stat(mine) is None
    assert await uploads.list("romeo@example.org") == []


@pytest_twisted.ensureDeferred
async def test_account_removal_interrupted_never_resurrects(uploads: Uploads) -> None:
    """Files go before records: a removal cut short leaves nothing to adopt."""
    ids = [await stored(uploads, "gone@example.org") for _ in range(4)]
    calls = []

    def stop_after_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    try:
        await uploads.delete_all("gone@example.org", stop_after_two)
    except KeyboardInterrupt:
        pass
    assert calls == [1, 2]
    adopted, _, _ = await reconcile(
        uploads.metadata, uploads.storage, POLICY, uploads.clock
    )
    assert adopted == 0
    assert await uploads.delete_all("gone@example.org") == 2
    for file_id in ids:
        assert await uploads.storage.stat(file_id) is None
        assert await uploads.metadata.get(file_id) is None


@pytest_twisted.ensureDeferred
async def test_take_down(uploads: Uploads) -> None:
    """A take-down needs the URL's id and name; files without records count too."""
    file_id = await stored(uploads, "romeo@example.org", "x.png")
    assert await uploads.take_down(BASE + url_path(file_id, "other.png")) is None
    removed = await uploads.take_down(BASE + url_path(file_id, "x.png") + "?token=t")
    assert removed is not None and removed.file_id == file_id
    assert await uploads.storage.stat(file_id) is None
    orphan = await stored(uploads, "romeo@example.org", "y.png")
    await uploads.metadata.delete(orphan)
    removed = await uploads.take_down(BASE + url_path(orphan, "y.png"))
    assert removed is not None and removed.filename == "y.png"
    assert await uploads.storage.stat(orphan) is None
    assert await uploads.take_down("https://elsewhere/nothing") is None
