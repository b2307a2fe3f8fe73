"""What only the PostgreSQL store has: several nodes on one database.

Each test gets a fresh database on the session's private server
(tests/pgserver.py); "nodes" are store instances with thread pools of their
own, so their queries really run at the same time.  Over 400 lines: each
test a race or an upgrade between nodes, with its own set-up; none is shared
with another store.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import helpers
import psycopg
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from pgserver import PostgresServer, postgresql  # noqa: F401
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from httpupload._reactor import running_reactor
from httpupload.expiry import remove_due
from httpupload.metadata import FileRecord, Usage, UsageNeeds
from httpupload.metadata.postgres import (
    DIALECT,
    SCHEMA_VERSION,
    PostgresMetadataStore,
    PostgresStoreError,
    owner_lock_key,
)

reactor = running_reactor()

# The schema as httpupload wrote it before its SQL moved to postgresql.sql
# (the MIGRATIONS of httpupload/metadata/postgres.py at 6bf6f58): databases
# made so must open, unchanged, forever.
EARLIER_MIGRATIONS = (
    """
    CREATE TABLE files (
        file_id text PRIMARY KEY,
        owner text NOT NULL,
        filename text NOT NULL,
        size bigint NOT NULL,
        content_type text,
        purpose text NOT NULL,
        created double precision NOT NULL,
        slot_expires double precision NOT NULL,
        expires double precision,
        completed boolean NOT NULL DEFAULT false,
        completed_at double precision,
        sha256 text
    );
    CREATE INDEX files_owner_created ON files (owner, created);
    CREATE INDEX files_expires ON files (expires) WHERE completed;
    CREATE INDEX files_slots ON files (slot_expires) WHERE NOT completed;
    """,
    """
    ALTER TABLE files ADD COLUMN lease_until double precision;
    """,
)
# The advisory lock class earlier versions took (the two-int form): nodes of
# both, during a rolling upgrade, must exclude each other.
LOCK_CLASS = 0x48545055


class NoRoom(Exception):
    pass


def record(file_id: str, created: float, owner: str = "a@x", **kw: Any) -> FileRecord:
    """A slot's record of 100 bytes (the shared builder's defaults otherwise)."""
    return helpers.record(file_id, created, 100, owner, **kw)


def sql(dsn: str, query: str) -> Any:
    """Run one statement on a connection of the test's own, off the reactor."""

    def run() -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    return deferToThread(run)


@pytest.fixture
def dsn(postgresql: PostgresServer) -> str:  # noqa: F811
    return postgresql.new_database()


@pytest_twisted.async_yield_fixture
async def nodes(
    dsn: str,
) -> AsyncIterator[Callable[..., PostgresMetadataStore]]:
    """Starts store instances ("nodes") on the test's database; closes them after."""
    made: list[PostgresMetadataStore] = []

    def make(**kw: Any) -> PostgresMetadataStore:
        store = PostgresMetadataStore(dsn, reactor, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def started(store: PostgresMetadataStore) -> PostgresMetadataStore:
    await store.start()
    return store


@pytest_twisted.ensureDeferred
async def test_concurrent_reserves_on_two_nodes_keep_a_file_quota(
    nodes: Callable[..., PostgresMetadataStore],
) -> None:
    """20 slot requests at once on two nodes against a 3-file quota: 3 granted."""
    one, two = [await started(nodes()) for _ in range(2)]
    assert not one.ordered and nodes(threads=1).ordered

    def three_files(usage: Usage) -> None:
        if len(usage.window) >= 3:
            raise NoRoom()

    needs = UsageNeeds(window=True, held=False, global_bytes=False)
    results = await DeferredList(
        [
            (one if n % 2 else two).reserve(
                record(f"f{n}", 1000.0), 86400, three_files, needs
            )
            for n in range(20)
        ],
        consumeErrors=True,
    )
    granted = [ok for ok, _ in results if ok]
    refused = [f for ok, f in results if not ok]
    assert len(granted) == 3
    assert all(cast(Failure, f).check(NoRoom) for f in refused)
    assert len(await one.all_ids()) == 3


@pytest_twisted.ensureDeferred
async def test_global_quota_across_owners_and_nodes(
    nodes: Callable[..., PostgresMetadataStore],
) -> None:
    """Two owners on two nodes against a 1000-byte global quota: ten of 100 granted."""
    one, two = [await started(nodes()) for _ in range(2)]

    def global_room(usage: Usage) -> None:
        if usage.global_bytes + 100 > 1000:
            raise NoRoom()

    needs = UsageNeeds(window=False, held=False, global_bytes=True)
    results = await DeferredList(
        [
            (one if n % 2 else two).reserve(
                record(f"f{n}", 1000.0, owner="a@x" if n % 4 < 2 else "b@x"),
                86400,
                global_room,
                needs,
            )
            for n in range(24)
        ],
        consumeErrors=True,
    )
    assert sum(ok for ok, _ in results) == 10
    assert (await one.usage("a@x", 1000.0, 86400)).global_bytes == 1000


class CountingStorage:
    """Counts removals; each one yields to the reactor, as real storage does."""

    def __init__(self) -> None:
        self.deleted: Counter[str] = Counter()

    def delete(self, file_id: str) -> Any:
        self.deleted[file_id] += 1
        return deferToThread(lambda: None)


async def add_due_files(store: PostgresMetadataStore, count: int) -> set[str]:
    ids = {f"due{n:04d}" for n in range(count)}
    await DeferredList(
        [
            store.reserve(
                record(i, 0.0, expires=100.0, completed=True, completed_at=1.0),
                86400,
                lambda usage: None,
                UsageNeeds(False, False, False),
            )
            for i in ids
        ],
        fireOnOneErrback=True,
    )
    return ids


@pytest_twisted.ensureDeferred
async def test_two_sweepers_remove_each_file_once(
    nodes: Callable[..., PostgresMetadataStore],
) -> None:
    """Two nodes sweeping 200 due files at once: each removed exactly once."""
    one, two = [await started(nodes()) for _ in range(2)]
    ids = await add_due_files(one, 200)
    storage = CountingStorage()
    swept: Counter[str] = Counter()

    async def sweep(store: PostgresMetadataStore) -> None:
        while batch := await remove_due(store, storage, 1000.0, 0.0, 20):  # type: ignore[arg-type]
            swept.update(r.file_id for r in batch)

    await DeferredList(
        [ensureDeferred(sweep(s)) for s in (one, two, one, two)],
        fireOnOneErrback=True,
    )
    assert set(storage.deleted) == ids and set(storage.deleted.values()) == {1}
    assert set(swept) == ids and set(swept.values()) == {1}
    assert await two.all_ids() == set()


@pytest_twisted.ensureDeferred
async def test_a_dead_sweepers_claims_return_after_the_lease(
    nodes: Callable[..., PostgresMetadataStore],
) -> None:
    """Records claimed by a sweeper that died are swept by another after the lease."""
    one, two = [await started(nodes()) for _ in range(2)]
    ids = await add_due_files(one, 30)
    claimed = await one.claim_due(1000.0, 0.0, 100, lease_seconds=60)
    assert {r.file_id for r in claimed} == ids
    await one.close()  # dies without removing anything
    storage = CountingStorage()
    assert await remove_due(two, storage, 1059.0, 0.0, 100, lease=60) == []  # type: ignore[arg-type]
    removed = await remove_due(two, storage, 1060.0, 0.0, 100, lease=60)  # type: ignore[arg-type]
    assert {r.file_id for r in removed} == ids == set(storage.deleted)
    assert await two.all_ids() == set()


@pytest_twisted.ensureDeferred
async def test_schema_fresh_and_nodes_starting_together(
    dsn: str, nodes: Callable[..., PostgresMetadataStore]
) -> None:
    """Three nodes starting at once on an empty database: one schema, current."""
    await DeferredList([nodes().start() for _ in range(3)], fireOnOneErrback=True)
    assert await sql(dsn, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    indexes = await sql(dsn, "SELECT indexname FROM pg_indexes WHERE tablename='files'")
    assert {name for (name,) in indexes} == {
        "files_pkey",
        "files_owner_created",
        "files_expires",
        "files_slots",
    }


@pytest_twisted.ensureDeferred
async def test_schema_upgraded_from_version_1(
    dsn: str, nodes: Callable[..., PostgresMetadataStore]
) -> None:
    """A version-1 database keeps its records and gains the lease column."""
    await sql(dsn, EARLIER_MIGRATIONS[0])
    await sql(dsn, "CREATE TABLE schema_version (version integer NOT NULL)")
    await sql(dsn, "INSERT INTO schema_version VALUES (1)")
    await sql(
        dsn,
        "INSERT INTO files (file_id, owner, filename, size, purpose, created, "
        "slot_expires, expires, completed) "
        "VALUES ('old', 'a@x', 'f', 1, 'message', 0, 0, 10, true)",
    )
    tool = nodes(upgrade=False)
    with pytest.raises(PostgresStoreError, match="start the service once"):
        await deferToThread(tool.open)
    store = await started(nodes())
    assert await sql(dsn, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    claimed = await store.claim_due(20.0, 0.0, 10, 60)
    assert [r.file_id for r in claimed] == ["old"] and claimed[0].completed


@pytest_twisted.ensureDeferred
async def test_newer_schema_is_refused(
    dsn: str, nodes: Callable[..., PostgresMetadataStore]
) -> None:
    """A schema newer than the code stops start with a clear error."""
    await started(nodes())
    await sql(dsn, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")  # noqa: S608
    with pytest.raises(PostgresStoreError, match="newer than this httpupload"):
        await deferToThread(nodes().open)
    with pytest.raises(PostgresStoreError, match="newer"):
        await nodes().start()


@pytest_twisted.ensureDeferred
async def test_a_dropped_connection_is_replaced(
    dsn: str, nodes: Callable[..., PostgresMetadataStore]
) -> None:
    """After pg_terminate_backend the next calls reconnect and succeed."""
    store = await started(nodes(threads=1))
    await store.reserve(record("f1", 1000.0), 86400, lambda usage: None)
    others = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert await sql(dsn, others) == [(True,)]
    assert (await store.get("f1")) is not None  # a read
    assert await sql(dsn, others) == [(True,)]
    await store.reserve(record("f2", 1000.0), 86400, lambda usage: None)  # a write
    assert await store.all_ids() == {"f1", "f2"}


@pytest_twisted.ensureDeferred
async def test_unreachable_database_fails_clearly(
    postgresql: PostgresServer,  # noqa: F811
) -> None:
    """A database that does not exist fails open() with one clear error."""
    store = PostgresMetadataStore(postgresql.dsn("no_such_db"), reactor)
    with pytest.raises(PostgresStoreError, match="no_such_db"):
        await deferToThread(store.open)
    await store.close()  # never started: nothing to stop, at once


def test_bad_dsn_fails_at_once_and_where_keeps_secrets_out() -> None:
    """A malformed DSN fails the constructor; ``where`` names no password."""
    with pytest.raises(PostgresStoreError, match="bad DSN"):
        PostgresMetadataStore("host=h nonsense=1", reactor)
    store = PostgresMetadataStore(
        "postgresql://u:s3cret@db.example:6543/uploads", reactor
    )
    assert store.where == "host=db.example port=6543 dbname=uploads"
    assert not store.ordered


@given(st.text())
def test_owner_lock_key_is_a_stable_int4(owner: str) -> None:
    """The owner's lock key fits PostgreSQL's int4 and is the same every time."""
    key = owner_lock_key(owner)
    assert -(2**31) <= key < 2**31
    assert key == owner_lock_key(str(owner))


@pytest_twisted.ensureDeferred
async def test_pending_slots_bound_across_two_nodes(
    nodes: Callable[..., PostgresMetadataStore],
) -> None:
    """20 slot requests at once on two nodes against a bound of 4 unused slots
    (the policy's own check): 4 granted, the rest wait for the earliest expiry."""
    from httpupload.config import QuotasConfig
    from httpupload.errors import QuotaExceeded
    from httpupload.policy import SlotPolicy

    one, two = [await started(nodes()) for _ in range(2)]
    policy = SlotPolicy(10**9, ("x",), quotas=QuotasConfig(pending_slots=4))
    needs = policy.usage_needs("message")
    assert needs.held and not needs.window and not needs.global_bytes
    results = await DeferredList(
        [
            (one if n % 2 else two).reserve(
                record(f"s{n}", 1000.0, slot_expires=1300.0 + n),
                86400,
                lambda usage: policy.check_quota(usage, 100, "message"),
                needs,
            )
            for n in range(20)
        ],
        consumeErrors=True,
    )
    refused = [cast(Failure, f).value for ok, f in results if not ok]
    assert sum(ok for ok, _ in results) == 4
    assert all(isinstance(e, QuotaExceeded) for e in refused)
    earliest = min(r.slot_expires for r in await one.owner_records("a@x"))
    assert {cast(QuotaExceeded, e).retry_at for e in refused} == {earliest}
    assert len(await two.all_ids()) == 4
    # Once they have expired, the owner may ask again.
    await one.reserve(
        record("later", 1400.0, slot_expires=1700.0),
        86400,
        lambda usage: policy.check_quota(usage, 100, "message"),
        needs,
    )


@pytest_twisted.ensureDeferred
async def test_a_hold_on_one_node_keeps_another_nodes_sweep_off(
    nodes: Callable[..., PostgresMetadataStore],
) -> None:
    """An upload's hold made on one node keeps the other node's sweep from its
    slot's record until the hold ends."""
    one, two = [await started(nodes()) for _ in range(2)]
    await one.reserve(
        record("slot", 0.0, slot_expires=300.0), 86400, lambda usage: None
    )
    await one.hold({"slot"}, 2000.0)
    storage = CountingStorage()
    assert await remove_due(two, storage, 1000.0, 300.0, 10) == []  # type: ignore[arg-type]
    assert await two.get("slot") is not None
    swept = await remove_due(two, storage, 2000.0, 300.0, 10)  # type: ignore[arg-type]
    assert [r.file_id for r in swept] == ["slot"]


async def earlier_database(dsn: str, version: int) -> None:
    """The schema as the earlier code left it at ``version``, one file in it."""
    await sql(dsn, "CREATE TABLE schema_version (version integer NOT NULL)")
    await sql(dsn, f"INSERT INTO schema_version VALUES ({version})")  # noqa: S608
    for step in EARLIER_MIGRATIONS[:version]:
        await sql(dsn, step)
    await sql(
        dsn,
        "INSERT INTO files (file_id, owner, filename, size, purpose, created, "
        "slot_expires, expires, completed, completed_at, sha256) "
        "VALUES ('old', 'a@x', 'f', 1, 'message', 0, 0, 10, true, 1, 'ab')",
    )


async def schema_of(dsn: str) -> object:
    """The tables' columns and the indexes of a database, as PostgreSQL says."""
    columns = await sql(
        dsn,
        "SELECT table_name, column_name, ordinal_position, data_type, "
        "is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    indexes = await sql(
        dsn,
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public' ORDER BY indexname",
    )
    return columns, indexes


@pytest_twisted.ensureDeferred
async def test_a_current_database_of_the_earlier_code_opens_unchanged(
    postgresql: PostgresServer,  # noqa: F811
) -> None:
    """A database the earlier code wrote at today's schema version opens as it
    is (even for a tool), and one made now has the same tables and indexes."""
    earlier = postgresql.new_database()
    await earlier_database(earlier, SCHEMA_VERSION)
    before = await schema_of(earlier)
    tool = PostgresMetadataStore(earlier, reactor, upgrade=False)
    try:
        await tool.start()
        got = await tool.get("old")
        assert got is not None and got.completed and got.sha256 == "ab"
        assert [r.file_id for r in await tool.claim_due(20.0, 0.0, 10, 60)] == ["old"]
    finally:
        await tool.close()
    assert await schema_of(earlier) == before
    fresh_dsn = postgresql.new_database()
    fresh = PostgresMetadataStore(fresh_dsn, reactor)
    try:
        await fresh.start()
    finally:
        await fresh.close()
    assert await schema_of(fresh_dsn) == before


@pytest_twisted.ensureDeferred
async def test_locks_are_the_ones_earlier_versions_take(
    dsn: str, nodes: Callable[..., PostgresMetadataStore]
) -> None:
    """A reservation holds the owner's and the global advisory lock under the
    keys earlier versions used, so that old and new nodes exclude each other
    during a rolling upgrade; schema upgrades lock the same key as before."""
    store = await started(nodes())
    entered, release = threading.Event(), threading.Event()

    def check(usage: Usage) -> None:
        entered.set()
        release.wait(10)

    reserving = store.reserve(record("f1", 1000.0), 86400, check)
    try:
        assert await deferToThread(entered.wait, 10)
        locks = await sql(
            dsn,
            "SELECT classid::bigint, objid::bigint FROM pg_locks "
            "WHERE locktype = 'advisory' AND objsubid = 2",
        )
    finally:
        release.set()
        await reserving
    owner = owner_lock_key("a@x") & 0xFFFFFFFF
    assert set(locks) == {(LOCK_CLASS + 1, owner), (LOCK_CLASS, 1)}
    assert DIALECT.queries["schema_lock"] == (
        f"SELECT pg_advisory_xact_lock({LOCK_CLASS}, 0)",
    )
