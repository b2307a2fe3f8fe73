"""What every metadata store must do: the ``MetadataStore`` contract.

Each test runs on the memory store, on SQLite (a real file in ``tmp_path``,
on the store's own thread) and on PostgreSQL (a fresh database on the
session's private server, tests/pgserver.py, reached by its unix socket);
what only one store has is in test_metadata.py and test_metadata_postgres.py
(with the model check of the memory store against SQLite).  Over 400 lines:
one test per promise of the protocol, all on the same three stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest
import pytest_twisted
from helpers import record
from pgserver import postgresql  # noqa: F401
from twisted.internet.defer import DeferredList
from twisted.python.failure import Failure

from httpupload._reactor import running_reactor
from httpupload.config import QuotasConfig
from httpupload.errors import QuotaExceeded
from httpupload.metadata import MetadataStore, Usage, UsageNeeds
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.metadata.sqlite import SQLiteMetadataStore
from httpupload.policy import SlotPolicy

reactor = running_reactor()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], MetadataStore]:
    """Makes stores of one kind on one (fresh) database."""
    if request.param == "memory":
        return MemoryMetadataStore
    if request.param == "sqlite":
        return lambda: SQLiteMetadataStore(tmp_path / "metadata.sqlite", reactor)
    dsn = request.getfixturevalue("postgresql").new_database()
    from httpupload.metadata.postgres import PostgresMetadataStore

    return lambda: PostgresMetadataStore(dsn, reactor)


@pytest_twisted.async_yield_fixture
async def store(
    make_store: Callable[[], MetadataStore],
) -> AsyncIterator[MetadataStore]:
    s = make_store()
    await s.start()
    yield s
    await s.close()


def accept(usage: Usage) -> None:
    pass


@pytest_twisted.ensureDeferred
async def test_reserve_complete_get(store: MetadataStore) -> None:
    """A reserved slot is on record; completing it records digest and type."""
    await store.reserve(record("f1", 1000.0), 86400, accept)
    got = await store.get("f1")
    assert got is not None and not got.completed
    done = await store.complete("f1", "ab" * 32, "image/png", 1010.0)
    assert done is not None and done.completed and done.sha256 == "ab" * 32
    assert done.content_type == "image/png" and done.completed_at == 1010.0
    assert await store.complete("missing", "00", "x/y", 1.0) is None
    assert [r.file_id for r in await store.list_owner("a@x")] == ["f1"]


@pytest_twisted.ensureDeferred
async def test_a_record_reads_back_as_it_was_written(store: MetadataStore) -> None:
    """Every field of a record, None and non-ASCII included, reads back equal."""
    written = record(
        "f1",
        1000.5,
        size=2**40,
        owner="ü@x",
        filename="Grüße 📎.txt",
        content_type="text/plain",
        purpose="permanent",
        expires=None,
        completed=True,
        completed_at=1001.25,
        sha256="cd" * 32,
    )
    await store.reserve(written, 86400, accept)
    assert await store.get("f1") == written


@pytest_twisted.ensureDeferred
async def test_usage_counts_files_and_live_slots(store: MetadataStore) -> None:
    """Window and held bytes count stored files and live slots, not dead ones."""
    await store.reserve(record("stored", 1000.0, size=100), 86400, accept)
    await store.complete("stored", "00", "a/b", 1001.0)
    await store.reserve(record("live", 1100.0, size=20), 86400, accept)
    await store.reserve(
        record("dead", 500.0, size=7, slot_expires=800.0), 86400, accept
    )
    await store.reserve(record("other", 1100.0, size=5, owner="b@x"), 86400, accept)
    usage = await store.usage("a@x", 1200.0, 86400)
    assert [(g.at, g.size) for g in usage.window] == [(1000.0, 100), (1100.0, 20)]
    assert usage.held == {"message": 120}
    assert usage.global_bytes == 125


@pytest_twisted.ensureDeferred
async def test_held_ends_when_a_file_expires_and_the_window_when_it_leaves(
    store: MetadataStore,
) -> None:
    """A file expiring at ``now`` holds nothing and is due; a grant made exactly
    one window ago is out of the window."""
    await store.reserve(record("f", 1000.0, expires=2000.0), 86400, accept)
    await store.complete("f", "00", "a/b", 1000.0)
    assert (await store.usage("a@x", 1999.0, 86400)).held == {"message": 10}
    at_expiry = await store.usage("a@x", 2000.0, 86400)
    assert at_expiry.held == {} and at_expiry.global_bytes == 0
    assert [r.file_id for r in await store.due(2000.0, 600, 10)] == ["f"]
    assert len((await store.usage("a@x", 1999.0, 1000.0)).window) == 1
    assert (await store.usage("a@x", 1999.0, 999.0)).window == ()


@pytest_twisted.ensureDeferred
async def test_check_refusal_inserts_nothing(store: MetadataStore) -> None:
    """Whatever the check raises fails the reservation and leaves no record."""

    def refuse(usage: Usage) -> None:
        raise ValueError("no room")

    with pytest.raises(ValueError, match="no room"):
        await store.reserve(record("f1", 1000.0), 86400, refuse)
    assert await store.get("f1") is None


@pytest_twisted.ensureDeferred
async def test_the_check_sees_usage_at_creation_without_the_new_record(
    store: MetadataStore,
) -> None:
    """The check is given the owner's usage at the record's creation time,
    without the record being reserved."""
    seen: list[Usage] = []
    await store.reserve(record("f1", 1000.0, size=3), 86400, accept)
    await store.reserve(record("f2", 1010.0, size=4), 86400, seen.append)
    (usage,) = seen
    assert usage.now == 1010.0
    assert [g.size for g in usage.window] == [3] and usage.held == {"message": 3}
    assert usage.pending == (1300.0,) and usage.global_bytes == 3


@pytest_twisted.ensureDeferred
async def test_the_check_gets_only_the_usage_it_needs(store: MetadataStore) -> None:
    """Parts of the usage the check does not need are left empty."""
    await store.reserve(record("f1", 1000.0), 86400, accept)
    seen: list[Usage] = []
    await store.reserve(record("f2", 1001.0), 86400, seen.append, UsageNeeds())
    nothing = UsageNeeds(window=False, held=False, global_bytes=False)
    await store.reserve(record("f3", 1002.0), 86400, seen.append, nothing)
    everything, bare = seen
    assert everything.window and everything.held and everything.pending
    assert everything.global_bytes == 10
    assert (bare.window, bare.held, bare.pending, bare.global_bytes) == ((), {}, (), 0)


@pytest_twisted.ensureDeferred
async def test_a_second_reservation_of_an_id_fails_and_keeps_the_first(
    store: MetadataStore,
) -> None:
    """An id already on record cannot be reserved again (reconciliation relies
    on it when two nodes adopt one file); the first record stays."""
    await store.reserve(record("f1", 1000.0, size=1), 86400, accept)
    with pytest.raises(Exception):  # noqa: B017  (each store has its own error)
        await store.reserve(record("f1", 2000.0, size=2), 86400, accept)
    kept = await store.get("f1")
    assert kept is not None and kept.size == 1
    assert await store.all_ids() == {"f1"}


@pytest_twisted.ensureDeferred
async def test_due_and_delete(store: MetadataStore) -> None:
    """Expired files and long-dead slots are due; deleting forgets them."""
    await store.reserve(record("old", 0.0, expires=100.0), 86400, accept)
    await store.complete("old", "00", "a/b", 1.0)
    await store.reserve(record("keep", 0.0, expires=None), 86400, accept)
    await store.complete("keep", "00", "a/b", 1.0)
    await store.reserve(record("slot", 0.0, slot_expires=300.0), 86400, accept)
    due = await store.due(1000.0, dead_slot_after=600, limit=10)
    assert {r.file_id for r in due} == {"old", "slot"}
    assert len(await store.due(1000.0, 600, limit=1)) == 1
    assert await store.due(899.0, 600, limit=10) == [await store.get("old")]
    deleted = await store.delete("old")
    assert deleted is not None and deleted.file_id == "old"
    assert await store.delete("old") is None
    assert await store.all_ids() == {"keep", "slot"}
    assert {r.file_id for r in await store.delete_owner("a@x")} == {"keep", "slot"}
    assert await store.all_ids() == set()


@pytest_twisted.ensureDeferred
async def test_delete_owner_leaves_other_owners_alone(store: MetadataStore) -> None:
    """Forgetting one owner returns their records, files and slots, and keeps
    everyone else's."""
    await store.reserve(record("a1", 0.0), 86400, accept)
    await store.complete("a1", "00", "a/b", 1.0)
    await store.reserve(record("a2", 0.0), 86400, accept)
    await store.reserve(record("b1", 0.0, owner="b@x"), 86400, accept)
    gone = await store.delete_owner("a@x")
    assert {(r.file_id, r.completed) for r in gone} == {("a1", True), ("a2", False)}
    assert await store.all_ids() == {"b1"}
    assert await store.delete_owner("a@x") == []


@pytest_twisted.ensureDeferred
async def test_claim_due_leases(store: MetadataStore) -> None:
    """Claimed records are not claimed again until their lease has passed."""
    for n in range(3):
        await store.reserve(record(f"old{n}", 0.0, expires=100.0), 86400, accept)
        await store.complete(f"old{n}", "00", "a/b", 1.0)
    await store.reserve(record("slot", 0.0, slot_expires=300.0), 86400, accept)
    await store.reserve(record("live", 900.0, expires=None), 86400, accept)
    first = await store.claim_due(1000.0, 600, limit=2, lease_seconds=60)
    assert len(first) == 2
    rest = await store.claim_due(1000.0, 600, limit=10, lease_seconds=60)
    claimed = {r.file_id for r in first} | {r.file_id for r in rest}
    assert len(rest) == 2 and claimed == {"old0", "old1", "old2", "slot"}
    assert await store.claim_due(1059.0, 600, limit=10, lease_seconds=60) == []
    assert len(await store.due(1059.0, 600, limit=10)) == 4  # due, leased or not
    again = await store.claim_due(1060.0, 600, limit=10, lease_seconds=60)
    assert {r.file_id for r in again} == claimed


@pytest_twisted.ensureDeferred
async def test_complete_twice_keeps_the_first(store: MetadataStore) -> None:
    """Completing a stored file again changes nothing and returns its record."""
    await store.reserve(record("f1", 1000.0), 86400, accept)
    first = await store.complete("f1", "aa" * 32, "image/png", 1010.0)
    again = await store.complete("f1", "bb" * 32, "text/plain", 1020.0)
    assert first == again and again is not None and again.sha256 == "aa" * 32


@pytest_twisted.ensureDeferred
async def test_usage_by_owner_and_records(store: MetadataStore) -> None:
    """Operators' totals count what is held now; an owner's records are all there."""
    await store.reserve(record("a1", 1000.0, size=100), 86400, accept)
    await store.complete("a1", "00", "a/b", 1001.0)
    await store.reserve(
        record("a2", 1000.0, size=50, slot_expires=1100.0), 86400, accept
    )
    await store.reserve(record("b1", 1000.0, size=7, owner="b@x"), 86400, accept)
    totals = await store.usage_by_owner(1050.0)
    assert totals == {"a@x": (2, 150), "b@x": (1, 7)}
    assert list(totals) == ["a@x", "b@x"]  # biggest first
    assert (await store.usage_by_owner(1200.0))["a@x"] == (1, 100)
    assert {r.file_id for r in await store.owner_records("a@x")} == {"a1", "a2"}
    assert await store.incomplete_ids() == {"a2", "b1"}
    assert [r.file_id for r in await store.list_owner("a@x")] == ["a1"]


@pytest_twisted.ensureDeferred
async def test_list_owner_is_newest_first(store: MetadataStore) -> None:
    """An owner's stored files are listed by completion, newest first."""
    for n, done in enumerate((30.0, 10.0, 20.0)):
        await store.reserve(record(f"f{n}", 0.0), 86400, accept)
        await store.complete(f"f{n}", "00", "a/b", done)
    assert [r.file_id for r in await store.list_owner("a@x")] == ["f0", "f2", "f1"]


@pytest_twisted.ensureDeferred
async def test_usage_lists_the_owners_unused_slots(store: MetadataStore) -> None:
    """Usage.pending is when each live unused slot of the owner expires, earliest
    first; window grants of unused slots carry that expiry, stored files none."""
    await store.reserve(record("stored", 1000.0), 86400, accept)
    await store.complete("stored", "00", "a/b", 1001.0)
    await store.reserve(record("late", 1100.0, slot_expires=1500.0), 86400, accept)
    await store.reserve(record("early", 1150.0, slot_expires=1300.0), 86400, accept)
    await store.reserve(record("dead", 500.0, slot_expires=800.0), 86400, accept)
    await store.reserve(record("theirs", 1100.0, owner="b@x"), 86400, accept)
    usage = await store.usage("a@x", 1200.0, 86400)
    assert usage.pending == (1300.0, 1500.0)
    assert [(g.at, g.slot_expires) for g in usage.window] == [
        (1000.0, None),
        (1100.0, 1500.0),
        (1150.0, 1300.0),
    ]
    assert (await store.usage("a@x", 1400.0, 86400)).pending == (1500.0,)


@pytest_twisted.ensureDeferred
async def test_pending_slots_bound_holds_under_concurrent_requests(
    store: MetadataStore,
) -> None:
    """Twelve slot requests at once against a bound of three unused slots: three
    granted, the rest refused with the earliest pending slot's expiry."""
    policy = SlotPolicy(10**9, ("x",), quotas=QuotasConfig(pending_slots=3))
    needs = policy.usage_needs("message")
    results = await DeferredList(
        [
            store.reserve(
                record(f"s{n}", 1000.0 + n, slot_expires=1300.0 + n),
                86400,
                lambda usage: policy.check_quota(usage, 10, "message"),
                needs,
            )
            for n in range(12)
        ],
        consumeErrors=True,
    )
    refused = [cast(Failure, f).value for ok, f in results if not ok]
    assert sum(ok for ok, _ in results) == 3
    assert len(refused) == 9 and all(isinstance(e, QuotaExceeded) for e in refused)
    granted = sorted(r.slot_expires for r in await store.owner_records("a@x"))
    assert {cast(QuotaExceeded, e).retry_at for e in refused} == {granted[0]}
    # A used slot no longer counts: room for one more at once.
    first = (await store.owner_records("a@x"))[0]
    await store.complete(first.file_id, "00", "a/b", 1020.0)
    await store.reserve(
        record("next", 1030.0),
        86400,
        lambda usage: policy.check_quota(usage, 10, "message"),
        needs,
    )


@pytest_twisted.ensureDeferred
async def test_a_hold_keeps_a_slot_from_the_sweep_until_it_ends(
    store: MetadataStore,
) -> None:
    """A held unused slot is not claimed before the hold ends; a hold never
    shortens a lease, and stored files and unknown ids are left alone."""
    await store.reserve(record("slot", 0.0, slot_expires=300.0), 86400, accept)
    await store.reserve(record("file", 0.0, expires=100.0), 86400, accept)
    await store.complete("file", "00", "a/b", 1.0)
    await store.hold(["slot", "file", "unknown"], 2000.0)
    await store.hold(["slot"], 1500.0)  # shorter: changes nothing
    await store.hold([], 5000.0)
    claimed = await store.claim_due(1000.0, 600, limit=10, lease_seconds=60)
    assert [r.file_id for r in claimed] == ["file"]
    await store.delete("file")
    assert await store.claim_due(1999.0, 600, limit=10, lease_seconds=60) == []
    again = await store.claim_due(2000.0, 600, limit=10, lease_seconds=60)
    assert [r.file_id for r in again] == ["slot"]


@pytest_twisted.ensureDeferred
async def test_a_deleted_records_lease_goes_with_it(store: MetadataStore) -> None:
    """A record reserved again under the id of a deleted one starts unleased."""
    await store.reserve(record("slot", 0.0, slot_expires=300.0), 86400, accept)
    await store.hold(["slot"], 5000.0)
    await store.delete("slot")
    await store.reserve(record("slot", 0.0, slot_expires=300.0), 86400, accept)
    claimed = await store.claim_due(1000.0, 600, limit=10, lease_seconds=60)
    assert [r.file_id for r in claimed] == ["slot"]


@pytest_twisted.ensureDeferred
async def test_a_hold_of_many_slots_holds_them_all(store: MetadataStore) -> None:
    """One hold of more slots than a statement takes parameters keeps every one
    of them from the sweep."""
    ids = {f"s{n:04d}" for n in range(1200)}
    await DeferredList(
        [store.reserve(record(i, 0.0, slot_expires=300.0), 86400, accept) for i in ids],
        fireOnOneErrback=True,
    )
    await store.hold(ids, 2000.0)
    assert await store.claim_due(1000.0, 600, limit=2000, lease_seconds=60) == []
    assert len(await store.due(1000.0, 600, limit=2000)) == len(ids)


@pytest_twisted.ensureDeferred
async def test_extend_slot_lengthens_an_unfinished_slot_only(
    store: MetadataStore,
) -> None:
    """Extending a slot moves its PUT URL's expiry later and never earlier,
    and returns the record as it stands; a stored file is left as it was and
    an unknown id is None."""
    await store.reserve(record("slot", 1000.0), 86400, accept)  # until 1300
    extended = await store.extend_slot("slot", 5000.0)
    assert extended == await store.get("slot")
    assert extended is not None and extended.slot_expires == 5000.0
    assert extended == record("slot", 1000.0, slot_expires=5000.0)
    assert await store.extend_slot("slot", 4000.0) == extended  # never shorter
    assert await store.extend_slot("slot", 5000.0) == extended  # twice: harmless
    await store.reserve(record("file", 1000.0), 86400, accept)
    stored = await store.complete("file", "00", "a/b", 1010.0)
    assert stored is not None
    assert await store.extend_slot("file", 9000.0) == stored
    assert await store.get("file") == stored
    assert await store.extend_slot("unknown", 9000.0) is None
    assert await store.all_ids() == {"slot", "file"}


@pytest_twisted.ensureDeferred
async def test_an_extended_slot_holds_its_room_and_stays_off_the_sweep(
    store: MetadataStore,
) -> None:
    """Past its original expiry an extended slot still counts as a live unused
    slot (held bytes, window, pending, operators' totals) and is neither due
    nor claimable until ``dead_slot_after`` past the new expiry."""
    await store.reserve(record("slot", 1000.0, size=7), 86400, accept)  # until 1300
    await store.reserve(record("plain", 1000.0, size=5), 86400, accept)
    await store.extend_slot("slot", 5000.0)
    usage = await store.usage("a@x", 4000.0, 86400)
    assert usage.held == {"message": 7} and usage.global_bytes == 7
    assert usage.pending == (5000.0,)
    assert [(g.size, g.slot_expires) for g in usage.window] == [(7, 5000.0)]
    assert await store.usage_by_owner(4000.0) == {"a@x": (1, 7)}
    after = await store.usage("a@x", 5000.0, 86400)
    assert after.held == {} and after.pending == ()
    due = await store.due(4000.0, 600, limit=10)
    assert [r.file_id for r in due] == ["plain"]
    assert [r.file_id for r in await store.due(5599.0, 600, limit=10)] == ["plain"]
    claimed = await store.claim_due(5599.0, 600, limit=10, lease_seconds=60)
    assert [r.file_id for r in claimed] == ["plain"]
    assert {r.file_id for r in await store.due(5600.0, 600, limit=10)} == {
        "slot",
        "plain",
    }
    claimed = await store.claim_due(5600.0, 600, limit=10, lease_seconds=60)
    assert [r.file_id for r in claimed] == ["slot"]


@pytest_twisted.ensureDeferred
async def test_close_after_start(
    make_store: Callable[[], MetadataStore],
) -> None:
    """A started store closes; the store says whether it keeps the order of
    operations."""
    s = make_store()
    assert isinstance(s.ordered, bool)
    await s.start()
    await s.reserve(record("close", 0.0), 86400, accept)
    await s.close()
