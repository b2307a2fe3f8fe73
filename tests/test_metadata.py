"""What only the SQLite store has, and the query layer's reading of SQL files.

What every store must do is in test_metadata_contract.py.  Here: the schema
in the file (versions, upgrades, and databases written by earlier versions
of this code, which must open unchanged), the store's one thread, how
``httpupload.metadata.query`` reads a dialect's SQL, and hypothesis driving
the memory and the SQLite store through the same random operations, to find
them answering alike.  About 400 lines: the SQLite half of the contract's
proof (earlier schemas, the model check) is best read in one place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from helpers import record
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from httpupload._reactor import running_reactor
from httpupload.metadata import RECORD_COLUMNS, FileRecord, MetadataStore, Usage
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.metadata.query import OPERATIONS, Connection, Dialect
from httpupload.metadata.sqlite import (
    DIALECT,
    SCHEMA_VERSION,
    SQLiteMetadataStore,
    connect,
)

reactor = running_reactor()

# The schema as httpupload wrote it before its SQL moved to sqlite.sql (the
# MIGRATIONS of httpupload/metadata/sqlite.py at 6bf6f58), run the way that
# code ran it: databases made so must open, unchanged, forever.
EARLIER_MIGRATIONS = (
    """
    CREATE TABLE files (
        file_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT,
        purpose TEXT NOT NULL,
        created REAL NOT NULL,
        slot_expires REAL NOT NULL,
        expires REAL,
        completed INTEGER NOT NULL DEFAULT 0,
        completed_at REAL,
        sha256 TEXT
    );
    CREATE INDEX files_owner_created ON files (owner, created);
    CREATE INDEX files_expires ON files (expires) WHERE completed = 1;
    CREATE INDEX files_slots ON files (slot_expires) WHERE completed = 0;
    """,
    """
    ALTER TABLE files ADD COLUMN lease_until REAL;
    """,
)


def earlier_database(path: Path, version: int) -> None:
    """A database as the earlier code left it at schema ``version``, with one
    stored file and one slot in it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for number in range(version):
        for statement in EARLIER_MIGRATIONS[number].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {number + 1}")
    db.execute(
        "INSERT INTO files (file_id, owner, filename, size, content_type, purpose, "
        "created, slot_expires, expires, completed, completed_at, sha256) VALUES "
        "('stored', 'a@x', 'f.txt', 5, 'text/plain', 'message', 0, 300, 100, 1, "
        "10, 'ab'), "
        "('slot', 'a@x', 'g.txt', 7, NULL, 'message', 0, 300, 86400, 0, NULL, NULL)"
    )
    db.close()


def schema(path: Path) -> list[tuple[str, ...]]:
    """What the file holds besides rows: its tables and indexes, as SQL text."""
    db = sqlite3.connect(path)
    try:
        return sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    finally:
        db.close()


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
async def test_the_schema_in_the_file_is_the_one_earlier_versions_wrote(
    tmp_path: Path,
) -> None:
    """A new database holds exactly the tables and indexes, in the same SQL
    text, as one the earlier code made; a sweep's claim leaves nothing in it."""
    earlier_database(tmp_path / "earlier.sqlite", SCHEMA_VERSION)
    store = SQLiteMetadataStore(tmp_path / "new.sqlite", reactor)
    await store.start()
    try:
        assert await store.claim_due(1000.0, 600, 10, 60) == []
    finally:
        await store.close()
    assert schema(tmp_path / "new.sqlite") == schema(tmp_path / "earlier.sqlite")


@pytest_twisted.ensureDeferred
async def test_a_current_database_of_the_earlier_code_opens_unchanged(
    tmp_path: Path,
) -> None:
    """A database the earlier code wrote at today's schema version is read and
    written as it is, and its schema stays as it was."""
    path = tmp_path / "metadata.sqlite"
    earlier_database(path, SCHEMA_VERSION)
    before = schema(path)
    store = SQLiteMetadataStore(path, reactor, upgrade=False)
    await store.start()
    try:
        stored = await store.get("stored")
        assert stored == FileRecord(
            "stored", "a@x", "f.txt", 5, "text/plain", "message", 0.0, 300.0,
            100.0, True, 10.0, "ab",
        )  # fmt: skip
        assert (await store.usage("a@x", 50.0, 86400)).held == {"message": 12}
        done = await store.complete("slot", "cd", "image/png", 60.0)
        assert done is not None and done.completed
        claimed = await store.claim_due(1000.0, 600, 10, 60)
        assert [r.file_id for r in claimed] == ["stored"]
    finally:
        await store.close()
    assert schema(path) == before


@pytest_twisted.ensureDeferred
async def test_a_version_1_database_is_upgraded_by_the_service_only(
    tmp_path: Path,
) -> None:
    """A database of schema 1 is refused by a tool, and the service upgrades it
    to today's schema, keeping its records."""
    path = tmp_path / "metadata.sqlite"
    earlier_database(path, 1)
    with pytest.raises(RuntimeError, match="start the service once"):
        connect(path, upgrade=False)
    store = SQLiteMetadataStore(path, reactor)
    await store.start()
    try:
        assert await store.all_ids() == {"stored", "slot"}
        claimed = await store.claim_due(1000.0, 600, 10, 60)
        assert {r.file_id for r in claimed} == {"stored", "slot"}
    finally:
        await store.close()
    earlier_database(tmp_path / "current.sqlite", SCHEMA_VERSION)
    assert schema(path) == schema(tmp_path / "current.sqlite")


@pytest_twisted.ensureDeferred
async def test_operations_take_effect_in_the_order_they_are_asked(
    tmp_path: Path,
) -> None:
    """On its one thread, a completion asked right after a reservation (not
    waiting for it) finds the record, and a read after both sees it stored."""
    store = SQLiteMetadataStore(tmp_path / "metadata.sqlite", reactor)
    await store.start()
    try:
        assert store.ordered
        slot = FileRecord("f", "a@x", "f.txt", 1, None, "message", 0.0, 300.0, None)
        reserved = store.reserve(slot, 86400, lambda usage: None)
        completed = store.complete("f", "00", "a/b", 1.0)
        got = store.get("f")
        await reserved
        assert (await completed) is not None
        found = await got
        assert found is not None and found.completed
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_check_rolls_back_on_the_thread(tmp_path: Path) -> None:
    """After a check raised inside its transaction, the store's thread goes on
    serving: the next reservation commits."""
    store = SQLiteMetadataStore(tmp_path / "metadata.sqlite", reactor)
    await store.start()

    def refuse(usage: Usage) -> None:
        raise LookupError("no")

    try:
        slot = FileRecord("f", "a@x", "f.txt", 1, None, "message", 0.0, 300.0, None)
        with pytest.raises(LookupError):
            await store.reserve(slot, 86400, refuse)
        await store.reserve(slot, 86400, lambda usage: None)
        assert await store.all_ids() == {"f"}
    finally:
        await store.close()


def style(name: str) -> str:
    return f":{name}"


def test_a_dialect_file_is_named_queries_of_statements() -> None:
    """Queries are split on their name lines and on semicolons, comments left
    out, fragments and the record's columns put in place."""
    text = "\n".join(
        [
            "-- a header, not a query",
            "-- name: _owner",
            "-- a fragment's comment",
            "owner = :owner",
            *(f"-- name: {op}\nSELECT 1" for op in OPERATIONS if op != "get"),
            "-- name: get",
            "-- two statements",
            "SELECT {columns} FROM files WHERE {_owner};",
            "INSERT INTO files ({columns}) VALUES ({values})",
            "-- name: nothing",
            "-- only a comment",
        ]
    )
    dialect = Dialect.parse("test.sql", text, style)
    columns = ", ".join(RECORD_COLUMNS)
    values = ", ".join(f":{c}" for c in RECORD_COLUMNS)
    assert dialect.queries["get"] == (
        f"SELECT {columns} FROM files WHERE owner = :owner",  # noqa: S608
        f"INSERT INTO files ({columns}) VALUES ({values})",  # noqa: S608
    )
    assert dialect.queries["nothing"] == () and "_owner" not in dialect.queries
    assert dialect.transactional("get") and not dialect.transactional("insert")
    assert dialect.migrations == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: get\nSELECT 1\n-- name: get\nSELECT 2", "defined twice"),
        ("-- name: get\nSELECT {_missing}", "no query '_missing'"),
        ("-- name: get\nSELECT 1", "no query for lock_owner"),
    ],
)
def test_a_broken_dialect_file_is_refused_when_read(text: str, message: str) -> None:
    """A query named twice, a reference to no query, or a missing operation
    fails the reading of the file, not a query at run time."""
    with pytest.raises(ValueError, match=message):
        Dialect.parse("test.sql", text, style)


def test_both_dialects_define_the_same_operations_and_migrations() -> None:
    """SQLite and PostgreSQL have the same queries (PostgreSQL's schema_version
    table aside) and the same number of schema steps."""
    pytest.importorskip("psycopg")
    from httpupload.metadata.postgres import DIALECT as POSTGRESQL

    extra = {q for q in POSTGRESQL.queries if q.startswith("schema_")}
    assert set(POSTGRESQL.queries) - extra == set(DIALECT.queries)
    assert len(POSTGRESQL.migrations) == len(DIALECT.migrations) == SCHEMA_VERSION


def accept(usage: Usage) -> None:
    pass


class InlineSQLite(SQLiteMetadataStore):
    """The SQLite store's queries run on the caller's thread, so that its
    Deferreds have fired on return, as the memory store's have."""

    def _run(
        self, work: Callable[[Connection], Any], *, transaction: bool = False
    ) -> Deferred[Any]:
        return maybeDeferred(self._in_thread, work, transaction)


OWNERS = st.sampled_from(["a@x", "b@x"])
IDS = st.sampled_from([f"f{n}" for n in range(6)])
TIMES = st.integers(0, 12).map(lambda n: n * 50.0)


@st.composite
def records(draw: st.DrawFn) -> FileRecord:
    created = draw(TIMES)
    done = draw(st.booleans())
    return record(
        draw(IDS),
        created,
        size=draw(st.integers(0, 100)),
        owner=draw(OWNERS),
        purpose=draw(st.sampled_from(["message", "permanent"])),
        slot_expires=created + draw(TIMES),
        expires=draw(st.none() | TIMES),
        completed=done,
        completed_at=created if done else None,
    )


WRITES = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), records()),
        st.tuples(st.just("complete"), IDS, TIMES),
        st.tuples(st.just("delete"), IDS),
        st.tuples(st.just("delete_owner"), OWNERS),
        st.tuples(st.just("hold"), st.frozensets(IDS), TIMES),
        st.tuples(st.just("extend_slot"), IDS, TIMES),
        st.tuples(st.just("claim_due"), TIMES, TIMES, TIMES),
    ),
    max_size=25,
)


class MemoryAnswersAsSQLiteTests(SynchronousTestCase):
    """The memory store is a model of the SQLite one, not a store of its own."""

    def _apply(self, store: MetadataStore, op: tuple[Any, ...]) -> object:
        name, *args = op
        if name == "reserve":
            d: Deferred[Any] = store.reserve(args[0], 86400, accept)
            failed: list[object] = []
            d.addErrback(failed.append)
            return bool(failed)
        if name == "complete":
            return self.successResultOf(store.complete(args[0], "00", "a/b", args[1]))
        if name == "delete":
            return self.successResultOf(store.delete(args[0]))
        if name == "delete_owner":
            gone = self.successResultOf(store.delete_owner(args[0]))
            return sorted(gone, key=_id)
        if name == "extend_slot":
            return self.successResultOf(store.extend_slot(args[0], args[1]))
        if name == "hold":
            return self.successResultOf(store.hold(args[0], args[1]))
        now, dead, lease = args
        claimed = self.successResultOf(store.claim_due(now, dead, 99, lease))
        return sorted(claimed, key=_id)

    def _observe(self, store: MetadataStore, now: float) -> object:
        usages = {
            owner: self.successResultOf(store.usage(owner, now, 500.0))
            for owner in ("a@x", "b@x")
        }
        listed = self.successResultOf(store.list_owner("a@x"))
        done = [r.completed_at or 0.0 for r in listed]
        assert done == sorted(done, reverse=True)
        due = self.successResultOf(store.due(now, 100.0, 99))
        theirs = self.successResultOf(store.owner_records("b@x"))
        return (
            {o: (sorted(u.window, key=repr), u.held, u.pending, u.global_bytes)
             for o, u in usages.items()},
            self.successResultOf(store.usage_by_owner(now)),
            sorted(due, key=_id),
            sorted(listed, key=_id),
            sorted(theirs, key=_id),
            self.successResultOf(store.all_ids()),
            self.successResultOf(store.incomplete_ids()),
        )  # fmt: skip

    @settings(max_examples=150, deadline=None)
    @given(WRITES)
    def test_memory_and_sqlite_answer_alike(
        self, operations: list[tuple[Any, ...]]
    ) -> None:
        """Any sequence of writes gives the same answers and leaves the same
        usage, records, due list and claims in the memory store as in SQLite,
        at any time (the boundaries of the records' times and leases included)."""
        memory, sqlite = MemoryMetadataStore(), InlineSQLite(Path(":memory:"), reactor)
        sqlite.open()
        try:
            for op in operations:
                self.assertEqual(self._apply(memory, op), self._apply(sqlite, op), op)
            # Every time is a multiple of 50 up to 1200 (a sum of two TIMES at
            # most): at each, so at every boundary of every record and lease.
            for at in map(float, range(0, 1250, 50)):
                self.assertEqual(self._observe(memory, at), self._observe(sqlite, at))
                # Leases and holds show in what may be claimed (a lease of 0
                # leaves what is claimable later as it was).
                claim = ("claim_due", at, 100.0, 0.0)
                self.assertEqual(self._apply(memory, claim), self._apply(sqlite, claim))
        finally:
            self.successResultOf(sqlite.close())


def _id(r: FileRecord) -> str:
    return r.file_id
