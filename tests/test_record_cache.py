"""Records remembered for downloads: hits, forgetting, bounds; the old wrapper.

On the memory store, whose Deferreds have fired on return: no thread, no
reactor.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metadata.cache import CachedRecords, RecordCache
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.slots import new_file_id

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


class CachedRecordsTests(SynchronousTestCase):
    """The old whole-store wrapper, kept until its users move to RecordCache."""

    def setUp(self) -> None:
        self.store = Counting()
        self.cache = CachedRecords(self.store)

    def slot(self, owner: str = "a@x.org") -> str:
        file_id = new_file_id()
        record = FileRecord(
            file_id, owner, "f.txt", 3, None, "message", NOW, NOW + 300, NOW + DAY
        )
        self.successResultOf(self.cache.reserve(record, DAY, lambda usage: None))
        return file_id

    def test_it_is_a_metadata_store_that_remembers_completions(self) -> None:
        """Completed through it, a record is served from memory afterwards."""
        store: MetadataStore = self.cache
        done = self.successResultOf(store.complete(self.slot(), "ab", "a/b", NOW))
        assert done is not None
        self.assertEqual(self.successResultOf(store.get(done.file_id)), done)
        self.assertEqual(self.store.gets, 0)
        self.assertTrue(store.ordered)

    def test_deletions_through_it_forget(self) -> None:
        """Records deleted, deleted with their owner, or claimed for the sweep
        through it are asked of the store again."""
        ids = [self.slot(owner) for owner in ("a@x.org", "b@x.org", "b@x.org")]
        for file_id in ids:
            self.successResultOf(self.cache.complete(file_id, "ab", "a/b", NOW))
        self.successResultOf(self.cache.delete(ids[0]))
        self.assertIsNone(self.successResultOf(self.cache.get(ids[0])))
        self.successResultOf(self.cache.delete_owner("b@x.org"))
        self.assertIsNone(self.successResultOf(self.cache.get(ids[1])))
        expiring = self.slot()
        self.successResultOf(self.cache.complete(expiring, "ab", "a/b", NOW))
        claimed = self.successResultOf(self.cache.claim_due(NOW + 2 * DAY, DAY, 10, 60))
        self.assertEqual([r.file_id for r in claimed], [expiring])
        before = self.store.gets
        self.successResultOf(self.cache.get(expiring))
        self.assertEqual(self.store.gets, before + 1)

    def test_the_rest_passes_through(self) -> None:
        """Holds, usage, listings, ids and the lifecycle reach the store."""
        held = self.slot()
        self.successResultOf(self.cache.hold([held], NOW + 10_000))
        self.assertEqual(
            self.successResultOf(self.cache.claim_due(NOW + 5000, 300, 10, 60)), []
        )
        usage = self.successResultOf(self.cache.usage("a@x.org", NOW, DAY))
        self.assertEqual(usage.pending, (NOW + 300,))
        self.assertEqual(self.successResultOf(self.cache.incomplete_ids()), {held})
        self.assertEqual(self.successResultOf(self.cache.all_ids()), {held})
        self.assertEqual(self.successResultOf(self.cache.list_owner("a@x.org")), [])
        self.assertEqual(
            len(self.successResultOf(self.cache.owner_records("a@x.org"))), 1
        )
        self.assertEqual(len(self.successResultOf(self.cache.due(NOW + DAY, 0, 10))), 1)
        self.assertEqual(
            self.successResultOf(self.cache.usage_by_owner(NOW)), {"a@x.org": (1, 3)}
        )
        self.successResultOf(self.cache.start())
        self.assertTrue(self.store.started)
        self.successResultOf(self.cache.stop())
        self.assertTrue(self.store.closed)
        self.successResultOf(self.cache.close())
