"""The metadata stores' contract: reservations, completion, usage, sweeping.

Each contract test runs against SQLite and against PostgreSQL (a private
server, tests/pgserver.py); what only one store has is tested below or in
test_metadata_postgres.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_twisted
from pgserver import postgresql  # noqa: F401
from twisted.internet import reactor

from httpupload.metadata import FileRecord, MetadataStore, Usage
from httpupload.metadata.sqlite import SCHEMA_VERSION, SQLiteMetadataStore, connect


def record(file_id: str, created: float, size: int = 10, owner: str = "a@x", **kw):  # type: ignore[no-untyped-def]
    values = dict(
        file_id=file_id,
        owner=owner,
        filename="f.txt",
        size=size,
        content_type=None,
        purpose="message",
        created=created,
        slot_expires=created + 300,
        expires=created + 86400,
    )
    values.update(kw)
    return FileRecord(**values)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], MetadataStore]:
    """Makes stores of one kind on one (fresh) database."""
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
    await s.stop()


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
async def test_check_refusal_inserts_nothing(store: MetadataStore) -> None:
    """Whatever the check raises fails the reservation and leaves no record."""

    def refuse(usage: Usage) -> None:
        raise ValueError("no room")

    with pytest.raises(ValueError, match="no room"):
        await store.reserve(record("f1", 1000.0), 86400, refuse)
    assert await store.get("f1") is None


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
    assert [r.file_id for r in await store.due(1000.0, 600, limit=1)] != []
    assert (await store.delete("old")).file_id == "old"  # type: ignore[union-attr]
    assert await store.delete("old") is None
    assert await store.all_ids() == {"keep", "slot"}
    assert {r.file_id for r in await store.delete_owner("a@x")} == {"keep", "slot"}
    assert await store.all_ids() == set()


def test_schema_version_and_reopen(tmp_path: Path) -> None:
    """A new file gets the current schema; reopening keeps data and version."""
    path = tmp_path / "m.sqlite"
    db = connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(
        "INSERT INTO files (file_id, owner, filename, size, purpose, created, "
        "slot_expires) VALUES ('x', 'o', 'n', 1, 'message', 0, 0)"
    )
    db.close()
    db = connect(path)
    assert db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 1
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        connect(path)


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
    from twisted.internet.defer import DeferredList

    from httpupload.config import QuotasConfig
    from httpupload.errors import QuotaExceeded
    from httpupload.policy import SlotPolicy

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
    refused = [f.value for ok, f in results if not ok]
    assert sum(ok for ok, _ in results) == 3
    assert len(refused) == 9 and all(isinstance(e, QuotaExceeded) for e in refused)
    granted = sorted(r.slot_expires for r in await store.owner_records("a@x"))
    assert {e.retry_at for e in refused} == {granted[0]}  # type: ignore[attr-defined]
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
