"""The metadata store in one SQLite file, for a single node.

All access goes through one dedicated thread (SQLite connections belong to
the thread that made them, and one writer at a time is what SQLite wants), so
nothing blocks the reactor.  WAL mode and a busy timeout let the operator
command read and write the same file while the service runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from httpupload.metadata import (
    ALL_USAGE,
    RECORD_COLUMNS,
    FileRecord,
    Grant,
    Usage,
    UsageNeeds,
)

FILE_NAME = "metadata.sqlite"
T = TypeVar("T")

log = Logger()

# Each entry upgrades the schema from its index to the next version.
MIGRATIONS: tuple[str, ...] = (
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
    # 2: a sweeper's lease on a due record (claim_due), so that sweepers in
    # several processes never take the same record.
    """
    ALTER TABLE files ADD COLUMN lease_until REAL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# Ids per UPDATE of a hold (SQLite allows 32766 parameters; stay well below).
_HOLD_CHUNK = 500

_COLUMNS = ", ".join(RECORD_COLUMNS)
# Rows that hold room now: stored and not yet expired, or a live slot.
_HELD = (
    "((completed = 1 AND (expires IS NULL OR expires > :now)) OR "
    "(completed = 0 AND slot_expires > :now))"
)


def connect(
    path: Path, *, any_thread: bool = False, upgrade: bool = True
) -> sqlite3.Connection:
    """Open (and create or upgrade) the database at ``path``; blocking.

    Only the service upgrades (``upgrade=True``): a tool opening the same file
    must not change the schema under a running, older service.
    """
    db = sqlite3.connect(
        path, timeout=30, isolation_level=None, check_same_thread=not any_thread
    )
    db.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives a process crash at once and a power
    # loss from the next checkpoint; what a power loss could take (the newest
    # slot records and completions) start-up reconciliation restores from the
    # files themselves, which are fsynced before any 201.  FULL would cost an
    # fsync per slot request.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA busy_timeout = 30000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"{path} has schema version {version}, newer than this httpupload "
            f"({SCHEMA_VERSION})"
        )
    if version < SCHEMA_VERSION and not upgrade:
        db.close()
        raise RuntimeError(
            f"{path} has schema version {version}; start the service once to "
            f"upgrade it to {SCHEMA_VERSION}"
        )
    for number in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("Metadata schema upgraded to version {v}", v=number + 1)
    return db


class SQLiteMetadataStore:
    """``MetadataStore`` on ``<folder>/metadata.sqlite``."""

    # One thread, first in first out: operations happen in the order asked.
    ordered = True

    def __init__(
        self, path: Path, reactor: IReactorFromThreads, *, upgrade: bool = True
    ) -> None:
        self.path = path
        self._upgrade = upgrade
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="httpupload-sqlite")
        self._db: sqlite3.Connection | None = None

    def _run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def open(self) -> None:
        """Open (create, upgrade) the database; blocking, at start-up.

        Opened here rather than in the thread so that a schema problem stops
        the service before it listens; afterwards only the thread uses it.
        """
        if self._db is None:
            self._db = connect(self.path, any_thread=True, upgrade=self._upgrade)

    def start(self) -> Deferred[None]:
        """Start the store's thread (its threads are not daemons: ``stop``)."""
        self.open()
        if not self._pool.started:
            self._pool.start()
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """The old name of ``close``."""
        return self.close()

    def close(self) -> Deferred[None]:
        d = self._run(self._close)

        def stop_pool(result: object) -> object:
            self._pool.stop()
            return result

        return d.addBoth(stop_pool)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store not started"
        return self._db

    def _usage(
        self,
        owner: str,
        now: float,
        window_seconds: float,
        needs: UsageNeeds = ALL_USAGE,
    ) -> Usage:
        db = self.db
        window: tuple[Grant, ...] = ()
        if needs.window:
            window = tuple(
                Grant(at, size, purpose, expires)
                for at, size, purpose, expires in db.execute(
                    "SELECT created, size, purpose, "
                    "CASE WHEN completed = 1 THEN NULL ELSE slot_expires END "
                    "FROM files WHERE owner = :owner "
                    "AND created > :start AND (completed = 1 OR slot_expires > :now) "
                    "ORDER BY created",
                    {"owner": owner, "start": now - window_seconds, "now": now},
                )
            )
        held: dict[str, int] = {}
        pending: tuple[float, ...] = ()
        if needs.held:
            held = dict(
                db.execute(
                    "SELECT purpose, SUM(size) FROM files WHERE owner = :owner AND "
                    + _HELD
                    + " GROUP BY purpose",
                    {"owner": owner, "now": now},
                ).fetchall()
            )
            pending = tuple(
                expires
                for (expires,) in db.execute(
                    "SELECT slot_expires FROM files WHERE owner = :owner AND "
                    "completed = 0 AND slot_expires > :now ORDER BY slot_expires",
                    {"owner": owner, "now": now},
                )
            )
        global_bytes = 0
        if needs.global_bytes:
            (global_bytes,) = db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM files WHERE " + _HELD, {"now": now}
            ).fetchone()
        return Usage(now, window, held, global_bytes, pending)

    def _reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds,
    ) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            check(self._usage(record.owner, record.created, window_seconds, needs))
            db.execute(
                f"INSERT INTO files ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                record.row(),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        return self._run(self._reserve, record, window_seconds, check, needs)

    def _get(self, file_id: str) -> FileRecord | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE file_id = ?", (file_id,)
        ).fetchone()
        return FileRecord.from_row(row) if row else None

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        return self._run(self._get, file_id)

    def _complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> FileRecord | None:
        self.db.execute(
            "UPDATE files SET completed = 1, completed_at = ?, sha256 = ?, "
            "content_type = ? WHERE file_id = ? AND completed = 0",
            (at, sha256, content_type, file_id),
        )
        return self._get(file_id)

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        return self._run(self._complete, file_id, sha256, content_type, at)

    def _list_owner(self, owner: str) -> list[FileRecord]:
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE owner = ? AND completed = 1 "
            "ORDER BY completed_at DESC",
            (owner,),
        )
        return [FileRecord.from_row(r) for r in rows]

    def list_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._run(self._list_owner, owner)

    def _delete(self, file_id: str) -> FileRecord | None:
        record = self._get(file_id)
        if record is not None:
            self.db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
        return record

    def delete(self, file_id: str) -> Deferred[FileRecord | None]:
        return self._run(self._delete, file_id)

    def _owner_records(self, owner: str) -> list[FileRecord]:
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE owner = ?", (owner,)
        ).fetchall()
        return [FileRecord.from_row(r) for r in rows]

    def owner_records(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._run(self._owner_records, owner)

    def _delete_owner(self, owner: str) -> list[FileRecord]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE owner = ?", (owner,)
            ).fetchall()
            db.execute("DELETE FROM files WHERE owner = ?", (owner,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [FileRecord.from_row(r) for r in rows]

    def delete_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._run(self._delete_owner, owner)

    def _due(self, now: float, dead_slot_after: float, limit: int) -> list[FileRecord]:
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE "
            "(completed = 1 AND expires IS NOT NULL AND expires <= :now) OR "
            "(completed = 0 AND slot_expires <= :dead) LIMIT :limit",
            {"now": now, "dead": now - dead_slot_after, "limit": limit},
        )
        return [FileRecord.from_row(r) for r in rows]

    def due(
        self, now: float, dead_slot_after: float, limit: int
    ) -> Deferred[list[FileRecord]]:
        return self._run(self._due, now, dead_slot_after, limit)

    def _hold(self, file_ids: list[str], until: float) -> None:
        db = self.db
        for start in range(0, len(file_ids), _HOLD_CHUNK):
            chunk = file_ids[start : start + _HOLD_CHUNK]
            marks = ", ".join("?" * len(chunk))
            db.execute(
                "UPDATE files SET lease_until = MAX(COALESCE(lease_until, 0), ?) "
                f"WHERE completed = 0 AND file_id IN ({marks})",
                (until, *chunk),
            )

    def hold(self, file_ids: Collection[str], until: float) -> Deferred[None]:
        """Keep these slots' records from the sweep until ``until``."""
        if not file_ids:
            return succeed(None)
        return self._run(self._hold, list(file_ids), until)

    def _claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> list[FileRecord]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE "
                "((completed = 1 AND expires IS NOT NULL AND expires <= :now) OR "
                "(completed = 0 AND slot_expires <= :dead)) AND "
                "(lease_until IS NULL OR lease_until <= :now) LIMIT :limit",
                {"now": now, "dead": now - dead_slot_after, "limit": limit},
            ).fetchall()
            db.executemany(
                "UPDATE files SET lease_until = ? WHERE file_id = ?",
                [(now + lease_seconds, row[0]) for row in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [FileRecord.from_row(r) for r in rows]

    def claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> Deferred[list[FileRecord]]:
        """Due records no other sweeper holds, leased (one transaction)."""
        return self._run(self._claim_due, now, dead_slot_after, limit, lease_seconds)

    def _all_ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT file_id FROM files")}

    def all_ids(self) -> Deferred[set[str]]:
        return self._run(self._all_ids)

    def _incomplete_ids(self) -> set[str]:
        rows = self.db.execute("SELECT file_id FROM files WHERE completed = 0")
        return {row[0] for row in rows}

    def incomplete_ids(self) -> Deferred[set[str]]:
        return self._run(self._incomplete_ids)

    def _usage_by_owner(self, now: float) -> dict[str, tuple[int, int]]:
        rows = self.db.execute(
            "SELECT owner, COUNT(*), SUM(size) FROM files WHERE "
            + _HELD
            + " GROUP BY owner ORDER BY SUM(size) DESC",
            {"now": now},
        )
        return {owner: (count, size) for owner, count, size in rows}

    def usage_by_owner(self, now: float) -> Deferred[dict[str, tuple[int, int]]]:
        return self._run(self._usage_by_owner, now)

    def usage(self, owner: str, now: float, window_seconds: float) -> Deferred[Usage]:
        """The owner's usage now (for the ad-hoc "my usage" command)."""
        return self._run(self._usage, owner, now, window_seconds)
