"""Opening what the config names: storage, metadata store and signing keys.

Runs at start-up, before anything listens, and turns every failure into a
``ConfigError`` naming the key to fix.  The optional backends (S3,
PostgreSQL) are imported only when named, so a single node needs neither
botocore nor psycopg.

A storage folder is the service user's alone: the SQLite database is
created 0600 before SQLite opens it (SQLite gives its ``-wal`` and ``-shm``
files the database's mode), and at start-up whatever an earlier version left
readable to others is tightened, in a thread.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from httpupload._reactor import IServiceReactor
from httpupload.config import Config
from httpupload.errors import ConfigError
from httpupload.keys import KeyRing, load_or_create_signing_key
from httpupload.metadata import MetadataStore
from httpupload.storage import Storage

if TYPE_CHECKING:
    # Imported only when named: a single node needs neither botocore nor
    # the S3 modules.
    from httpupload.storage.filesystem import FilesystemStorage
    from httpupload.storage.s3 import S3Storage

log = Logger()

# How often to look for multipart uploads left in an object store.
STALE_UPLOAD_SWEEP = 3600.0


class Backends:
    """The storage and metadata store of one node: opened at start, closed at stop.

    ``tighten``: the walk that makes a storage folder owner-only (the
    service's start only: an operator command leaves the folder as it is);
    ``sweep_stale``: the sweep of multipart uploads a crashed node left in an
    object store.  Both are handed in by whoever built the storage (it knows
    its backend), so nothing here asks a store what it can do.
    """

    def __init__(
        self,
        storage: Storage,
        metadata: MetadataStore,
        tighten: Callable[[], Deferred[tuple[int, int]]] | None = None,
        sweep_stale: Callable[[], Deferred[int]] | None = None,
    ) -> None:
        self.storage = storage
        self.metadata = metadata
        self._tighten = tighten
        self._sweep_stale = sweep_stale

    def start(self) -> Deferred[None]:
        """Start the storage, then the metadata store (both protocols' ``start``).

        The second is started without waiting for the first.  Fires once
        both have; never fails: a store that cannot start is logged (its
        users then meet its errors, as when it fails later).
        """
        started = (
            ("storage", self.start_storage()),
            ("metadata store", self.metadata.start()),
        )

        async def wait() -> None:
            for name, d in started:
                try:
                    await d
                except Exception:
                    log.failure("Starting the {name} failed", name=name)

        return ensureDeferred(wait())

    def close(self) -> Deferred[None]:
        """Close the metadata store, then the storage; each is closed even if
        the other fails (the failure is logged)."""

        async def close() -> None:
            for name, closing in (
                ("metadata store", self.metadata.close),
                ("storage", self.storage.close),
            ):
                try:
                    await closing()
                except Exception:
                    log.failure("Closing the {name} failed", name=name)

        return ensureDeferred(close())

    def start_storage(self) -> Deferred[None]:
        """Start the storage alone (an operator command starts its store itself)."""
        started = self.storage.start()
        if self._tighten is not None:
            tighten, self._tighten = self._tighten, None
            # Not waited for: the folder itself is closed to others already.
            tighten().addCallbacks(_tightened, _tighten_failed)
        return started

    def abort_stale_uploads(self) -> Deferred[int]:
        """Multipart uploads a crashed node left in an object store; 0 elsewhere.

        How old counts as stale is the store's own setting
        (``[storage.s3] stale_multipart_after``).
        """
        if self._sweep_stale is None:
            return succeed(0)
        return self._sweep_stale()


class BackendsService(MultiService):
    """Owns a node's stores; every service that uses them is its child.

    On start the stores are started first (storage, then metadata), then the
    children in the order they were added.  What a store's start does in the
    background (an object store's credentials, a PostgreSQL round trip) is
    not waited for: a store that is down at start must not hold back the
    XMPP link, and its failure is logged.  On stop the children stop in the
    reverse order,
    each after the ones added later have stopped, and the stores close after
    the last.  So a child that must outlive others (the expiry sweep, which
    holds the records of the uploads still arriving) is added before them,
    and services that stop together go in one ``MultiService`` child.  It
    also sweeps, hourly, the multipart uploads a crashed node left behind.
    """

    def __init__(self, backends: Backends, clock: IReactorTime) -> None:
        super().__init__()
        self.backends = backends
        self.clock = clock
        self._sweeper: LoopingCall | None = None
        self.setName("backends")

    def startService(self) -> None:
        Service.startService(self)
        self.backends.start()  # never fails: logs a store that cannot start
        for child in self:
            child.startService()
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(STALE_UPLOAD_SWEEP, now=False)

    def _sweep(self) -> Deferred[None]:
        def done(count: int) -> None:
            if count:
                log.info("Aborted {count} stale multipart uploads", count=count)

        d = self.backends.abort_stale_uploads().addCallback(done)
        d.addErrback(
            lambda f: log.failure("Sweeping stale multipart uploads failed", f)
        )
        return d

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

        async def stop() -> None:
            for child in reversed(list(self)):
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    log.failure("Stopping {name} failed", name=child.name)
            await self.backends.close()

        return ensureDeferred(stop())


def _tightened(counts: tuple[int, int]) -> None:
    tightened, failed = counts
    if tightened or failed:
        log.info(
            "Made {tightened} files and folders in the storage folder owner-only "
            "(0600/0700); {failed} could not be changed (owned by another user)",
            tightened=tightened,
            failed=failed,
        )


def _tighten_failed(failure: Failure) -> None:
    log.failure("Making the storage folder owner-only failed", failure)


def open_backends(
    config: Config, reactor: IServiceReactor, *, tool: bool = False
) -> Backends:
    """The node's backends; ``tool``: for an operator command beside a running
    service (nothing created, cleared, upgraded or re-moded)."""
    if tool:
        _check_tool_folder(config)
    if config.storage.backend == "s3":
        bucket = _s3_storage(config, reactor, prepare=not tool)
        return Backends(
            bucket,
            _metadata(config, reactor, upgrade=not tool),
            sweep_stale=bucket.abort_stale_uploads,
        )
    folder = _filesystem_storage(config, reactor, prepare=not tool)
    return Backends(
        folder,
        _metadata(config, reactor, upgrade=not tool),
        tighten=None if tool else folder.tighten_modes,
    )


def private_database(path: Path) -> None:
    """Make the SQLite file (if need be) and its journals owner-only.

    SQLite creates a new database with the umask's mode (0644 under the usual
    022) and its ``-wal`` and ``-shm`` files with the database's mode, so the
    file is made 0600 before SQLite opens it; those of an earlier version are
    narrowed.  Blocking, at start-up.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (
        path,
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-shm"),
    ):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(name, mode & 0o700)


def _check_tool_folder(config: Config) -> None:
    """A folder the service has never used is an error (most likely a wrong
    config), not something to set up from an operator command."""
    root = config.storage.path
    if config.storage.backend != "filesystem" or root is None:
        return
    for needed in (root, root / "files", root / "tmp"):
        if not needed.is_dir():
            raise ConfigError(
                "[storage] path",
                f"{needed} is not a folder (has the service run with this config?)",
            )
    from httpupload.metadata.sqlite import FILE_NAME

    if config.metadata.backend == "sqlite" and not (root / FILE_NAME).is_file():
        raise ConfigError(
            "[storage] path",
            f"no {FILE_NAME} in {root} (has the service run with this config?)",
        )


def _s3_storage(
    config: Config, reactor: IServiceReactor, *, prepare: bool = True
) -> S3Storage:
    s = config.storage
    assert s.s3 is not None
    try:
        from httpupload.storage.s3 import S3Storage
    except ImportError as e:
        raise ConfigError(
            "[storage] backend",
            f'"s3" needs the s3 extra (pip install "httpupload[s3]"): {e}',
        ) from None
    try:
        bucket = S3Storage(s.s3, reactor)
    except ValueError as e:
        raise ConfigError("[storage.s3]", str(e)) from None
    if prepare:
        # Blocking, before the reactor runs: a store that would lose
        # uploads stops start-up with one line (storage/s3/probe.py).
        bucket.check_at_start(largest_file=config.limits.max_file_size)
    return bucket


def _filesystem_storage(
    config: Config, reactor: IServiceReactor, *, prepare: bool = True
) -> FilesystemStorage:
    from httpupload.storage.filesystem import FilesystemStorage

    s = config.storage
    assert s.path is not None
    storage = FilesystemStorage(s.path, reactor, reactor.getThreadPool())
    if not prepare:
        # Not prepare(): it clears tmp/, where a running service's uploads
        # in flight are.
        return storage
    try:
        leftovers = storage.prepare()
    except OSError as e:
        raise ConfigError(
            "[storage] path", f"cannot use {s.path}: {e.strerror}"
        ) from None
    if leftovers:
        log.info("Removed {count} partial uploads left by a crash", count=leftovers)
    return storage


def _metadata(
    config: Config, reactor: IServiceReactor, *, upgrade: bool = True
) -> MetadataStore:
    m = config.metadata
    if m.backend == "postgresql":
        try:
            from httpupload.metadata.postgres import PostgresMetadataStore
        except ImportError as e:
            raise ConfigError(
                "[metadata] backend",
                f'"postgresql" needs the postgresql extra '
                f'(pip install "httpupload[postgresql]"): {e}',
            ) from None
        assert m.dsn is not None
        store = PostgresMetadataStore(
            m.dsn, reactor, threads=m.threads if upgrade else 1, upgrade=upgrade
        )
        try:
            store.open()
        except RuntimeError as e:
            raise ConfigError(
                "[metadata] dsn", f"cannot use {store.where}: {e}"
            ) from None
        return store
    from httpupload.metadata.sqlite import FILE_NAME, SQLiteMetadataStore

    assert config.storage.path is not None
    sqlite_store = SQLiteMetadataStore(
        config.storage.path / FILE_NAME, reactor, upgrade=upgrade
    )
    try:
        if upgrade:
            private_database(sqlite_store.path)
        sqlite_store.open()
    except OSError as e:
        raise ConfigError(
            "[storage] path", f"cannot use {sqlite_store.path}: {e.strerror}"
        ) from None
    except (sqlite3.Error, RuntimeError) as e:
        raise ConfigError(
            "[storage] path", f"cannot use {sqlite_store.path}: {e}"
        ) from None
    return sqlite_store


def signing_keys(config: Config) -> KeyRing:
    """The configured ring, or (one node, one folder) a key kept in the folder."""
    if config.http.signing_keys is not None:
        return config.http.signing_keys
    # check_deployment has made sure a lone key is only generated where one
    # local folder holds everything.
    assert config.storage.path is not None
    return KeyRing.single(load_or_create_signing_key(config.storage.path))
