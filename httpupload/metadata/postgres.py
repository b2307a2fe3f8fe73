"""The metadata store in PostgreSQL, shared by several nodes (psycopg 3).

Every query runs on a thread pool of the store's own, one connection per
thread, so nothing waits on the reactor thread.  The queries are
``postgresql.sql``, run by ``httpupload.metadata.query``.  Several nodes
share one database, so what SQLite gets from being one writer is done with
locks here:

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

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from httpupload.config_deploy import MetadataConfig
from httpupload.metadata import query
from httpupload.metadata.query import Dialect, SQLStore, owner_lock_key, rows

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

log = Logger()

DIALECT = Dialect.load("postgresql.sql", lambda name: f"%({name})s")
# Each entry upgrades the schema from its index to the next version; the
# same steps as the SQLite store's, in PostgreSQL's types.
MIGRATIONS: tuple[str, ...] = tuple(
    ";\n".join(step) + ";" for step in DIALECT.migrations
)
SCHEMA_VERSION = len(MIGRATIONS)
_CONNECT_TIMEOUT = 10


class PostgresStoreError(RuntimeError):
    """The database cannot be used: unreachable, or a schema we cannot run on."""


def _rows(conn: Connection, name: str, **params: Any) -> list[Any]:
    return rows(DIALECT, conn, name, params)


def schema_version(conn: Connection) -> int:
    """The schema version recorded in the database (0: none yet)."""
    if _rows(conn, "schema_table") == [(None,)]:
        return 0
    found = _rows(conn, "schema_version")
    return int(found[0][0]) if found else 0


def upgrade_schema(conn: Connection, upgrade: bool = True) -> int:
    """Create or upgrade the schema in one transaction; returns the version.

    Under an advisory lock: a node starting while another migrates waits,
    then finds the schema current.  A newer schema than ours is refused.
    """
    with conn.transaction():
        _rows(conn, "schema_lock")
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
            _rows(conn, "schema_create")
        for number in range(version, SCHEMA_VERSION):
            for statement in DIALECT.migrations[number]:
                conn.execute(statement)
        _rows(conn, "schema_set", version=SCHEMA_VERSION)
    log.info("Metadata schema upgraded to version {v}", v=SCHEMA_VERSION)
    return SCHEMA_VERSION


class PostgresMetadataStore(SQLStore):
    """``MetadataStore`` in a PostgreSQL database that several nodes share."""

    dialect = DIALECT

    def __init__(
        self,
        dsn: str,
        reactor: IReactorFromThreads,
        *,
        threads: int = MetadataConfig.threads,
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

    def _call(
        self, work: Callable[[query.Connection], T], *, transaction: bool = False
    ) -> T:
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
        self, work: Callable[[query.Connection], T], *, transaction: bool = False
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
        return self._run(lambda conn: None)

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


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "PostgresMetadataStore",
    "PostgresStoreError",
    "owner_lock_key",
    "schema_version",
    "upgrade_schema",
]
