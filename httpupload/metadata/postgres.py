"""The metadata store in PostgreSQL, shared by several nodes (psycopg 3).

Every query runs on a thread pool of the store's own, one connection per
thread, so nothing waits on the reactor thread.  Several nodes share one
database, so what SQLite gets from being one writer is done with locks here:

- ``reserve`` takes a transaction-scoped advisory lock on the owner (and on
  the whole service when a global quota is read) before computing usage, so
  concurrent slot requests on any nodes are checked one after another;
- ``claim_due`` leases due records with ``FOR UPDATE SKIP LOCKED``, so
  sweepers on every node never take the same record;
- schema upgrades run in one transaction under an advisory lock, so nodes
  starting together do not both migrate.

A connection found broken is replaced, and the operation run once more when
that cannot apply it twice.  Only this module imports psycopg (the optional
``httpupload[postgresql]`` extra).
"""

# Queries are joined from constant fragments; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
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

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

log = Logger()

# Each entry upgrades the schema from its index to the next version; the
# same steps as the SQLite store's, in PostgreSQL's types.
MIGRATIONS: tuple[str, ...] = (
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
SCHEMA_VERSION = len(MIGRATIONS)

# Advisory lock keys (the two-int form): a class of our own, then the object.
_LOCK_CLASS = 0x48545055  # "HTPU"
_OWNER_LOCK_CLASS = _LOCK_CLASS + 1
_SCHEMA_LOCK = 0
_GLOBAL_LOCK = 1
_CONNECT_TIMEOUT = 10

_COLUMNS = ", ".join(RECORD_COLUMNS)
_FILES_COLUMNS = ", ".join(f"files.{c}" for c in RECORD_COLUMNS)
# Rows that hold room now: stored and not yet expired, or a live slot.
_HELD = (
    "((completed AND (expires IS NULL OR expires > %(now)s)) OR "
    "(NOT completed AND slot_expires > %(now)s))"
)
_DUE = (
    "((completed AND expires IS NOT NULL AND expires <= %(now)s) OR "
    "(NOT completed AND slot_expires <= %(dead)s))"
)

_INSERT = (
    f"INSERT INTO files ({_COLUMNS}) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_GET = f"SELECT {_COLUMNS} FROM files WHERE file_id = %s"
# The updated row if it was an open slot, else the row as it stands (if any):
# one statement, so running it twice gives the same answer.
_COMPLETE = (
    "WITH done AS (UPDATE files SET completed = true, completed_at = %(at)s, "
    "sha256 = %(sha256)s, content_type = %(type)s "
    f"WHERE file_id = %(id)s AND NOT completed RETURNING {_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM done UNION ALL "
    f"SELECT {_COLUMNS} FROM files WHERE file_id = %(id)s "
    "AND NOT EXISTS (SELECT 1 FROM done)"
)
_CLAIM = (
    "WITH due AS (SELECT file_id FROM files WHERE "
    + _DUE
    + " AND (lease_until IS NULL OR lease_until <= %(now)s) "
    "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "UPDATE files SET lease_until = %(until)s FROM due "
    f"WHERE files.file_id = due.file_id RETURNING {_FILES_COLUMNS}"
)

# One statement, and running it twice does the same: a hold never shortens a
# lease (a sweeper's claim, or an earlier hold).
_HOLD = (
    "UPDATE files SET lease_until = GREATEST(COALESCE(lease_until, 0), %(until)s) "
    "WHERE NOT completed AND file_id = ANY(%(ids)s)"
)


class PostgresStoreError(RuntimeError):
    """The database cannot be used: unreachable, or a schema we cannot run on."""


def owner_lock_key(owner: str) -> int:
    """A stable 32-bit key for the owner's advisory lock (collisions only
    make two owners wait for each other)."""
    digest = hashlib.sha256(owner.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def schema_version(conn: Connection) -> int:
    """The schema version recorded in the database (0: none yet)."""
    if conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,):
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def upgrade_schema(conn: Connection, upgrade: bool = True) -> int:
    """Create or upgrade the schema in one transaction; returns the version.

    Under an advisory lock: a node starting while another migrates waits,
    then finds the schema current.  A newer schema than ours is refused.
    """
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _SCHEMA_LOCK)
        )
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise PostgresStoreError(
                f"the database has schema version {version}, newer than this "
                f"httpupload ({SCHEMA_VERSION}): upgrade httpupload"
            )
        if version < SCHEMA_VERSION and not upgrade:
            raise PostgresStoreError(
                f"the database has schema version {version}; start the service "
                f"once to upgrade it to {SCHEMA_VERSION}"
            )
        if version == SCHEMA_VERSION:
            return version
        if version == 0:
            conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (0)")
        for number in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[number])
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    log.info("Metadata schema upgraded to version {v}", v=SCHEMA_VERSION)
    return SCHEMA_VERSION


class PostgresMetadataStore:
    """``MetadataStore`` in a PostgreSQL database that several nodes share."""

    def __init__(
        self,
        dsn: str,
        reactor: IReactorFromThreads,
        *,
        threads: int = 4,
        upgrade: bool = True,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        # A malformed DSN fails here, at once.  Defaults for what it omits:
        # a bounded connect, and a name that pg_stat_activity shows.
        try:
            given = conninfo_to_dict(dsn)
        except psycopg.Error as e:
            raise PostgresStoreError(f"bad DSN: {e}") from None
        defaults: dict[str, str | int] = {
            "connect_timeout": _CONNECT_TIMEOUT,
            "application_name": "httpupload",
        }
        self._conninfo = make_conninfo(
            dsn, **{k: v for k, v in defaults.items() if k not in given}
        )
        self.where = " ".join(
            f"{key}={given[key]}" for key in ("host", "port", "dbname") if key in given
        )
        """Where the database is, for messages: the DSN without any secret."""
        self._reactor = reactor
        self._upgrade = upgrade
        # With one thread operations take effect in the order they were asked.
        self.ordered = threads == 1
        self._pool = ThreadPool(
            minthreads=1, maxthreads=threads, name="httpupload-postgres"
        )
        self._local = threading.local()
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._opened = False

    # -- connections and the thread pool ------------------------------------

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            # Reads after an advisory lock must see what its last holder
            # committed: a fresh snapshot per statement, whatever the server's
            # default isolation.
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            self._local.conn = conn
            with self._lock:
                self._connections.add(conn)
        return conn

    def _forget(self, conn: Connection) -> None:
        self._local.conn = None
        with self._lock:
            self._connections.discard(conn)
        conn.close()

    def _ensure_open(self) -> None:
        """Check (and upgrade) the schema once, before any other query."""
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            conn: Connection | None = None
            try:
                conn = self._connection()
                upgrade_schema(conn, self._upgrade)
            except BaseException as e:
                if conn is not None:
                    self._forget(conn)  # the store is unusable: leave nothing open
                if isinstance(e, psycopg.Error):
                    raise PostgresStoreError(f"cannot use the database: {e}") from e
                raise
            self._opened = True

    def _call(self, work: Callable[[Connection], T], *, transaction: bool = False) -> T:
        """Run ``work`` on this thread's connection, reconnecting if it broke.

        Retried once on a new connection, unless the failure came with a
        COMMIT (it may have been applied).  Single statements outside a
        transaction are all written so that running them twice is harmless.
        """
        self._ensure_open()
        for attempt in range(2):
            conn = self._connection()
            committing = False
            try:
                if not transaction:
                    return work(conn)
                with conn.transaction():
                    result = work(conn)
                    committing = True
                return result
            except psycopg.OperationalError as e:
                if not (conn.broken or conn.closed):
                    raise
                self._forget(conn)
                if attempt or committing:
                    raise
                log.warn("PostgreSQL connection lost ({e}); reconnecting", e=e)
        raise AssertionError("not reached")

    def _run(
        self, work: Callable[[Connection], T], *, transaction: bool = False
    ) -> Deferred[T]:
        return deferToThreadPool(
            self._reactor, self._pool, lambda: self._call(work, transaction=transaction)
        )

    def open(self) -> None:
        """Connect and create or upgrade the schema; blocking.

        For start-up, before the reactor runs, so that an unreachable database
        or a newer schema stops the service before it listens.
        """
        self._ensure_open()
        # The caller's thread makes no further queries: only the pool does.
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._forget(conn)

    def start(self) -> Deferred[None]:
        """Start the threads; the schema is checked (and upgraded) on one."""
        if not self._pool.started:
            self._pool.start()

        def check(conn: Connection) -> None:
            pass

        return self._run(check)

    def stop(self) -> Deferred[None]:
        """The old name of ``close``."""
        return self.close()

    def close(self) -> Deferred[None]:
        """Close every connection, then stop the threads."""
        if not self._pool.started:
            return succeed(None)
        d = deferToThreadPool(self._reactor, self._pool, self._close_all)

        def stop_pool(result: object) -> object:
            self._pool.stop()
            return result

        return d.addBoth(stop_pool)

    def _close_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for each in connections:
            each.close()

    # -- reservations and usage ---------------------------------------------

    @staticmethod
    def _usage(
        conn: Connection,
        owner: str,
        now: float,
        window_seconds: float,
        needs: UsageNeeds = ALL_USAGE,
    ) -> Usage:
        window: tuple[Grant, ...] = ()
        if needs.window:
            rows = conn.execute(
                "SELECT created, size, purpose, "
                "CASE WHEN completed THEN NULL ELSE slot_expires END "
                "FROM files WHERE owner = %(owner)s "
                "AND created > %(start)s AND (completed OR slot_expires > %(now)s) "
                "ORDER BY created",
                {"owner": owner, "start": now - window_seconds, "now": now},
            )
            window = tuple(
                Grant(at, size, purpose, expires) for at, size, purpose, expires in rows
            )
        held: dict[str, int] = {}
        pending: tuple[float, ...] = ()
        if needs.held:
            rows = conn.execute(
                "SELECT purpose, SUM(size)::bigint FROM files "
                "WHERE owner = %(owner)s AND " + _HELD + " GROUP BY purpose",
                {"owner": owner, "now": now},
            )
            held = {purpose: size for purpose, size in rows}
            rows = conn.execute(
                "SELECT slot_expires FROM files WHERE owner = %(owner)s AND "
                "NOT completed AND slot_expires > %(now)s ORDER BY slot_expires",
                {"owner": owner, "now": now},
            )
            pending = tuple(expires for (expires,) in rows)
        global_bytes = 0
        if needs.global_bytes:
            row = conn.execute(
                "SELECT COALESCE(SUM(size), 0)::bigint FROM files WHERE " + _HELD,
                {"now": now},
            ).fetchone()
            assert row is not None
            global_bytes = row[0]
        return Usage(now, window, held, global_bytes, pending)

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        def work(conn: Connection) -> None:
            # One owner's reservations, on any node, one after another; all
            # of them when the check reads what everyone holds.  Always owner
            # then global, so two transactions never wait on each other.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (_OWNER_LOCK_CLASS, owner_lock_key(record.owner)),
            )
            if needs.global_bytes:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _GLOBAL_LOCK)
                )
            check(
                self._usage(conn, record.owner, record.created, window_seconds, needs)
            )
            conn.execute(_INSERT, record.row())

        return self._run(work, transaction=True)

    def usage(self, owner: str, now: float, window_seconds: float) -> Deferred[Usage]:
        """The owner's usage now (for the ad-hoc "my usage" command)."""
        return self._run(lambda conn: self._usage(conn, owner, now, window_seconds))

    def usage_by_owner(self, now: float) -> Deferred[dict[str, tuple[int, int]]]:
        def work(conn: Connection) -> dict[str, tuple[int, int]]:
            rows = conn.execute(
                "SELECT owner, COUNT(*), SUM(size)::bigint FROM files WHERE "
                + _HELD
                + " GROUP BY owner ORDER BY SUM(size) DESC",
                {"now": now},
            )
            return {owner: (count, size) for owner, count, size in rows}

        return self._run(work)

    # -- single records -----------------------------------------------------

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        def work(conn: Connection) -> FileRecord | None:
            row = conn.execute(_GET, (file_id,)).fetchone()
            return FileRecord.from_row(row) if row else None

        return self._run(work)

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        params = {"id": file_id, "at": at, "sha256": sha256, "type": content_type}

        def work(conn: Connection) -> FileRecord | None:
            row = conn.execute(_COMPLETE, params).fetchone()
            return FileRecord.from_row(row) if row else None

        return self._run(work)

    def delete(self, file_id: str) -> Deferred[FileRecord | None]:
        def work(conn: Connection) -> FileRecord | None:
            row = conn.execute(
                f"DELETE FROM files WHERE file_id = %s RETURNING {_COLUMNS}",
                (file_id,),
            ).fetchone()
            return FileRecord.from_row(row) if row else None

        return self._run(work)

    # -- an owner's records -------------------------------------------------

    def _records(self, query: str, *params: object) -> Deferred[list[FileRecord]]:
        def work(conn: Connection) -> list[FileRecord]:
            return [FileRecord.from_row(row) for row in conn.execute(query, params)]

        return self._run(work)

    def list_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._records(
            f"SELECT {_COLUMNS} FROM files WHERE owner = %s AND completed "
            "ORDER BY completed_at DESC",
            owner,
        )

    def owner_records(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._records(
            f"SELECT {_COLUMNS} FROM files WHERE owner = %s",
            owner,
        )

    def delete_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._records(
            f"DELETE FROM files WHERE owner = %s RETURNING {_COLUMNS}",
            owner,
        )

    # -- sweeping and reconciliation ----------------------------------------

    def due(
        self, now: float, dead_slot_after: float, limit: int
    ) -> Deferred[list[FileRecord]]:
        params = {"now": now, "dead": now - dead_slot_after, "limit": limit}

        def work(conn: Connection) -> list[FileRecord]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM files WHERE " + _DUE + " LIMIT %(limit)s",
                params,
            )
            return [FileRecord.from_row(row) for row in rows]

        return self._run(work)

    def claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> Deferred[list[FileRecord]]:
        """Due records no other sweeper holds, leased in one statement.

        Rows another sweeper is claiming right now are skipped, not waited
        for; rows it claimed stay out until their lease has passed.  Run
        twice (after a lost connection), a lost claim's rows only wait for
        their lease.
        """
        params = {
            "now": now,
            "dead": now - dead_slot_after,
            "limit": limit,
            "until": now + lease_seconds,
        }

        def work(conn: Connection) -> list[FileRecord]:
            return [FileRecord.from_row(row) for row in conn.execute(_CLAIM, params)]

        return self._run(work)

    def hold(self, file_ids: Collection[str], until: float) -> Deferred[None]:
        """Keep these slots' records from every node's sweep until ``until``."""
        if not file_ids:
            return succeed(None)
        params = {"ids": list(file_ids), "until": until}

        def work(conn: Connection) -> None:
            conn.execute(_HOLD, params)

        return self._run(work)

    def all_ids(self) -> Deferred[set[str]]:
        def work(conn: Connection) -> set[str]:
            return {row[0] for row in conn.execute("SELECT file_id FROM files")}

        return self._run(work)

    def incomplete_ids(self) -> Deferred[set[str]]:
        def work(conn: Connection) -> set[str]:
            rows = conn.execute("SELECT file_id FROM files WHERE NOT completed")
            return {row[0] for row in rows}

        return self._run(work)


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PostgresMetadataStore",
    "PostgresStoreError",
    "owner_lock_key",
    "schema_version",
    "upgrade_schema",
]
