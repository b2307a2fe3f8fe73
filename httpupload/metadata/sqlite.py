"""The metadata store in one SQLite file, for a single node.

All access goes through one dedicated thread (SQLite connections belong to
the thread that made them, and one writer at a time is what SQLite wants), so
nothing blocks the reactor.  WAL mode and a busy timeout let the operator
command read and write the same file while the service runs.  The queries
are ``sqlite.sql``, run by ``httpupload.metadata.query``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from httpupload.metadata.query import Connection, Dialect, SQLStore

FILE_NAME = "metadata.sqlite"
T = TypeVar("T")

log = Logger()

DIALECT = Dialect.load("sqlite.sql", lambda name: f":{name}")
# Each entry upgrades the schema from its index to the next version.
MIGRATIONS: tuple[str, ...] = tuple(
    ";\n".join(step) + ";" for step in DIALECT.migrations
)
SCHEMA_VERSION = len(MIGRATIONS)


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
            for statement in DIALECT.migrations[number]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("Metadata schema upgraded to version {v}", v=number + 1)
    return db


class SQLiteMetadataStore(SQLStore):
    """``MetadataStore`` on ``<folder>/metadata.sqlite``."""

    dialect = DIALECT
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

    def _run(
        self, work: Callable[[Connection], T], *, transaction: bool = False
    ) -> Deferred[T]:
        return deferToThreadPool(
            self._reactor, self._pool, self._in_thread, work, transaction
        )

    def _in_thread(self, work: Callable[[Connection], T], transaction: bool) -> T:
        db = self.db
        if not transaction:
            return work(db)
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    def open(self) -> None:
        """Open (create, upgrade) the database; blocking, at start-up.

        Opened here rather than in the thread so that a schema problem stops
        the service before it listens; afterwards only the thread uses it.
        """
        if self._db is None:
            self._db = connect(self.path, any_thread=True, upgrade=self._upgrade)

    def start(self) -> Deferred[None]:
        """Start the store's thread (its threads are not daemons: ``close``)."""
        self.open()
        if not self._pool.started:
            self._pool.start()
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Close the database on its thread, then stop the thread."""
        if not self._pool.started:
            self._close()
            return succeed(None)
        d = deferToThreadPool(self._reactor, self._pool, self._close)

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


__all__ = [
    "FILE_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLiteMetadataStore",
    "connect",
]
