"""Records remembered for downloads: hits, invalidation, bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet.defer import Deferred

from httpupload._reactor import running_reactor
from httpupload.metadata import FileRecord
from httpupload.metadata.cache import CachedRecords
from httpupload.metadata.sqlite import SQLiteMetadataStore
from httpupload.slots import new_file_id

reactor = running_reactor()

DAY = 86400.0
NOW = 1_700_000_000.0


class Counting(SQLiteMetadataStore):
    gets = 0

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        self.gets += 1
        return super().get(file_id)


@pytest_twisted.async_yield_fixture
async def store(tmp_path: Path) -> AsyncIterator[Counting]:
    s = Counting(tmp_path / "metadata.sqlite", reactor)
    await s.start()
    yield s
    await s.stop()


async def slot(store: SQLiteMetadataStore, owner: str = "a@x.org") -> str:
    file_id = new_file_id()
    record = FileRecord(
        file_id, owner, "f.txt", 3, None, "message", NOW, NOW + 300, NOW + DAY
    )
    await store.reserve(record, DAY, lambda usage: None)
    return file_id


@pytest_twisted.ensureDeferred
async def test_a_completed_record_is_served_from_memory(store: Counting) -> None:
    cache = CachedRecords(store)
    pending = await slot(store)
    assert (await cache.get(pending)) is not None
    assert (await cache.get(pending)) is not None
    assert store.gets == 2  # a slot not yet stored is never remembered
    done = await cache.complete(pending, "ab" * 32, "text/plain", NOW)
    assert done is not None and done.completed
    assert await cache.get(pending) == done
    assert store.gets == 2
    # Fetched from the store once, then remembered.
    other = await slot(store)
    await store.complete(other, "cd" * 32, "text/plain", NOW)
    await cache.get(other)
    await cache.get(other)
    assert store.gets == 3


@pytest_twisted.ensureDeferred
async def test_deletions_through_it_forget(store: Counting) -> None:
    cache = CachedRecords(store)
    ids = [await slot(store, owner) for owner in ("a@x.org", "b@x.org", "b@x.org")]
    for file_id in ids:
        await cache.complete(file_id, "ab" * 32, "text/plain", NOW)
    await cache.delete(ids[0])
    assert await cache.get(ids[0]) is None
    await cache.delete_owner("b@x.org")
    assert await cache.get(ids[1]) is None and await cache.get(ids[2]) is None
    expiring = await slot(store)
    await cache.complete(expiring, "ab" * 32, "text/plain", NOW)
    claimed = await cache.claim_due(NOW + 2 * DAY, DAY, 10, 60)
    assert [r.file_id for r in claimed] == [expiring]
    before = store.gets
    await cache.get(expiring)  # asked of the store again, not served from memory
    assert store.gets == before + 1


@pytest_twisted.ensureDeferred
async def test_it_holds_at_most_size_records(store: Counting) -> None:
    cache = CachedRecords(store, size=3)
    ids = [await slot(store) for _ in range(5)]
    for file_id in ids:
        await cache.complete(file_id, "ab" * 32, "text/plain", NOW)
    before = store.gets
    for file_id in ids[-3:]:
        await cache.get(file_id)
    assert store.gets == before
    await cache.get(ids[0])
    assert store.gets == before + 1


@pytest_twisted.ensureDeferred
async def test_holds_and_pending_usage_pass_through(store: Counting) -> None:
    """An upload's hold through the cache reaches the store (the sweep skips the
    held slot), and usage through it lists the owner's unused slots."""
    cache = CachedRecords(store)
    held = await slot(store)
    await cache.hold([held], NOW + 10_000)
    assert await cache.claim_due(NOW + 5000, 300, 10, 60) == []
    assert (await cache.usage("a@x.org", NOW, DAY)).pending == (NOW + 300,)
