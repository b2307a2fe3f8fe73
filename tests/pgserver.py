"""A private PostgreSQL 15 cluster for the tests, started once per session.

``initdb`` makes a cluster in a temporary folder, and ``postgres`` serves it on
a unix socket in the same folder and on no TCP port at all (so no port number
is picked, freed and hoped to stay free, and the unit suite's ban on TCP
sockets holds), durability off (``fsync=off``: a test database need not
survive a power loss).  PostgreSQL
refuses to run as root, so as root both run as the ``postgres`` user of the
Debian package, which then owns the folder.  The server is our direct child
(``Popen(user=...)``, no ``runuser`` in between), so it can be stopped by its
pid and dies with us (``PR_SET_PDEATHSIG``) even if pytest is killed.

Without Debian's ``postgresql-15`` the tests that need it are skipped, unless
``HTTPUPLOAD_REQUIRE_INTEGRATION=1`` is set (``scripts/test`` sets it): then
they fail, so CI never passes by skipping them.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The child-process helper of the integration runners (tests/integration is a
# plain folder of modules, as its conftest makes it importable).
_INTEGRATION = str(Path(__file__).resolve().parent / "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

from prosody import die_with_parent  # noqa: E402

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"
# Only names the socket file (.s.PGSQL.<port>): nothing listens on TCP.
PORT = 5432

__all__ = ["PostgresServer", "postgresql"]


class PostgresServer:
    """One throw-away cluster; ``new_database()`` gives each test its own."""

    def __init__(self) -> None:
        self.base_dir: Path | None = None
        self.port = PORT
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """The libpq DSN of a database here (its host: the socket's folder)."""
        return f"host={self.base_dir} port={self.port} user={USER} dbname={dbname}"

    @property
    def _user(self) -> str | None:
        """Whom the server runs as: ``postgres`` if we are root, else us."""
        return USER if self._as_root else None

    def start(self, timeout: float = 30.0) -> None:
        """initdb, then start the server and wait until it takes connections."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="httpupload-pg-"))
        data = self.base_dir / "data"
        if self._as_root:
            entry = pwd.getpwnam(USER)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(BIN / "initdb"), "-D", str(data), "-U", USER, "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
            group=self._user,
        )  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN / "postgres"), "-D", str(data), "-p", str(self.port),
                    "-k", str(self.base_dir), "-c", "listen_addresses=",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
                start_new_session=True,
                user=self._user,
                group=self._user,
            )  # fmt: skip
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def new_database(self) -> str:
        """A fresh empty database on this server; returns its DSN."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Immediate shutdown (nothing here needs to survive), then kill."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # what pg_ctl stop -m immediate sends
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None


# The one server of the session.  Each test module that imports the fixture
# gets a fixture of its own (pytest keys fixtures by module), so they share
# this server and the last one torn down stops it.
_server: PostgresServer | None = None
_users = 0


@atexit.register
def _stop_everything() -> None:
    """Last resort if pytest dies before the fixtures' finalizers ran."""
    if _server is not None:
        _server.stop()


def _require_postgresql() -> None:
    if (BIN / "initdb").exists() and (BIN / "postgres").exists():
        try:
            import psycopg  # noqa: F401
        except ImportError:
            message = "psycopg is missing: pip install '.[postgresql]'"
        else:
            return
    else:
        message = (
            f"PostgreSQL 15 not found in {BIN}: install the Debian package "
            "postgresql (scripts/test does it)"
        )
    if os.environ.get("HTTPUPLOAD_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgresServer]:
    """A running PostgreSQL 15 on 127.0.0.1; ``new_database()`` for each test."""
    global _server, _users
    _require_postgresql()
    if _server is None:
        server = PostgresServer()
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        _server = server
    _users += 1
    try:
        yield _server
    finally:
        _users -= 1
        if _users == 0:
            _server.stop()
            _server = None
