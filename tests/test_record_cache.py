"""Records remembered for downloads: hits, forgetting, bounds; the site using them.

On the memory store, whose Deferreds have fired on return: no thread, no
reactor.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from httpupload.metadata import FileRecord
from httpupload.metadata.cache import RecordCache
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.slots import new_file_id
from httpupload.testing import make_harness, result_of

DAY = 86400.0
NOW = 1_700_000_000.0


class Counting(MemoryMetadataStore):
    """A memory store that counts the lookups it is asked."""

    gets = 0

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        self.gets += 1
        return super().get(file_id)


class RecordCacheTests(SynchronousTestCase):
    """The cache in front of the download's record lookup."""

    def setUp(self) -> None:
        self.store = Counting()

    def slot(self, owner: str = "a@x.org") -> str:
        file_id = new_file_id()
        record = FileRecord(
            file_id, owner, "f.txt", 3, None, "message", NOW, NOW + 300, NOW + DAY
        )
        self.successResultOf(self.store.reserve(record, DAY, lambda usage: None))
        return file_id

    def stored(self, owner: str = "a@x.org") -> FileRecord:
        done = self.store.complete(self.slot(owner), "ab" * 32, "text/plain", NOW)
        record = self.successResultOf(done)
        assert record is not None
        return record

    def test_a_stored_files_record_is_looked_up_once(self) -> None:
        """A stored file's record comes from the store once, then from memory."""
        cache = RecordCache(self.store)
        record = self.stored()
        self.assertEqual(self.successResultOf(cache.get(record.file_id)), record)
        self.assertEqual(self.successResultOf(cache.get(record.file_id)), record)
        self.assertEqual(self.store.gets, 1)

    def test_a_slot_not_yet_stored_is_never_remembered(self) -> None:
        """An unused slot's record (and a missing one) is asked of the store
        every time: it changes when the upload lands."""
        cache = RecordCache(self.store)
        pending = self.slot()
        for _ in range(2):
            self.assertIsNotNone(self.successResultOf(cache.get(pending)))
            self.assertIsNone(self.successResultOf(cache.get("missing")))
        self.assertEqual(self.store.gets, 4)

    def test_a_record_handed_in_at_completion_needs_no_lookup(self) -> None:
        """A record remembered when its upload completed is served at once;
        a slot's record handed in is not kept."""
        cache = RecordCache(self.store)
        record = self.stored()
        self.assertIs(cache.remember(record), record)
        self.assertEqual(self.successResultOf(cache.get(record.file_id)), record)
        pending = self.store.records[self.slot()]
        self.assertIs(cache.remember(pending), pending)
        self.assertIsNone(cache.remember(None))
        self.successResultOf(cache.get(pending.file_id))
        self.assertEqual(self.store.gets, 1)

    def test_a_forgotten_record_is_looked_up_again(self) -> None:
        """After ``forget`` (its file found gone), a record is asked of the
        store again, and a deleted one is then not found."""
        cache = RecordCache(self.store)
        records = [self.stored() for _ in range(2)]
        for record in records:
            cache.remember(record)
        self.successResultOf(self.store.delete(records[0].file_id))
        cache.forget([records[0].file_id, "never-seen"])
        self.assertIsNone(self.successResultOf(cache.get(records[0].file_id)))
        self.assertEqual(
            self.successResultOf(cache.get(records[1].file_id)), records[1]
        )
        self.assertEqual(self.store.gets, 1)

    def test_it_holds_at_most_size_records(self) -> None:
        """Past ``size`` records the least recently used is dropped first."""
        cache = RecordCache(self.store, size=3)
        records = [self.stored() for _ in range(5)]
        for record in records:
            cache.remember(record)
        self.successResultOf(cache.get(records[2].file_id))  # used: kept longer
        cache.remember(self.stored())  # records[3] goes, the oldest used
        for record in (records[2], records[4]):
            self.successResultOf(cache.get(record.file_id))
        self.assertEqual(self.store.gets, 0)
        self.successResultOf(cache.get(records[3].file_id))
        self.assertEqual(self.store.gets, 1)


def test_a_download_after_its_upload_asks_the_store_nothing() -> None:
    """The upload hands its completed record to the download's cache: the GET
    that follows the PUT is served with no record lookup."""
    store = Counting()
    harness = make_harness(metadata=store, records=RecordCache(store))
    slot = harness.grant("a.txt", 3, "text/plain")
    put = harness.request("PUT", slot.url, data=b"abc", headers=slot.headers)
    assert put.code == 201
    asked = store.gets
    got = harness.request("GET", slot.url)
    assert (got.code, got.body) == (200, b"abc")
    assert store.gets == asked


def test_a_file_gone_since_it_was_remembered_is_a_404_and_forgotten() -> None:
    """A file deleted where the cache cannot see it (an owner's command, another
    node) answers 404, and its remembered record is dropped."""
    store = Counting()
    records = RecordCache(store)
    harness = make_harness(metadata=store, records=records)
    slot = harness.grant("a.txt", 3, "text/plain")
    assert harness.request("PUT", slot.url, data=b"abc", headers=slot.headers).code
    file_id = slot.slot.file_id
    # Deleted as owners and the sweep delete: the file first, then its record.
    assert result_of(harness.storage.delete(file_id))
    result_of(store.delete(file_id))
    assert harness.request("GET", slot.url).code == 404
    asked = store.gets
    assert harness.request("GET", slot.url).code == 404
    assert store.gets == asked + 1  # looked up again: no longer remembered
