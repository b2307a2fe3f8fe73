"""Nobody reads what is not theirs: a storage folder is its owner's alone.

Folders 0700, files 0600 (stored, in progress, the database and its journals,
the signing key) whatever the umask; what an earlier version left readable is
tightened at start-up; a root-run operator command works as the folder's
owner.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from storage_fakes import inline_filesystem
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import provider

from httpupload._reactor import as_service_reactor
from httpupload.backends import open_backends
from httpupload.config import Config, parse_config
from httpupload.errors import ConfigError
from httpupload.keys import KEY_FILE_NAME
from httpupload.metadata import FileRecord
from httpupload.metadata.sqlite import FILE_NAME
from httpupload.privileges import (
    Identity,
    become,
    run_as_storage_owner,
    storage_owner,
)
from httpupload.slots import new_file_id
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemStorage, tighten_modes
from httpupload.testing import START, make_harness

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
ADMIN = [sys.executable, "-m", "httpupload"]

# Typed as what the service asks of a reactor (it provides it all).
reactor = as_service_reactor(global_reactor)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes(root: Path) -> dict[str, int]:
    """Every entry under ``root`` (and itself), relative name -> permission bits."""
    found = {".": mode(root)}
    for folder, folders, files in os.walk(root):
        for name in (*folders, *files):
            path = Path(folder) / name
            found[str(path.relative_to(root))] = mode(path)
    return found


def assert_owner_only(root: Path) -> None:
    for name, bits in modes(root).items():
        path = root / name
        wanted = 0o700 if path.is_dir() else 0o600
        assert bits == wanted, f"{name}: {bits:o}"


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The usual umask, and one that would leave everything open."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def config_for(root: Path) -> Config:
    return parse_config(
        {
            "component": {"jid": "upload.example.org", "secret": "s3cret"},
            "http": {"public_url": "https://upload.example.org/"},
            "storage": {"path": str(root)},
        },
        root.parent,
    )


def info(file_id: str, data: bytes) -> FileInfo:
    return FileInfo(file_id, "a.bin", len(data), "application/octet-stream", "00", 1.0)


@pytest_twisted.ensureDeferred
async def test_stored_files_and_folders_are_owner_only(
    umask: int, tmp_path: Path
) -> None:
    """Folders are 0700 and files 0600, in progress and stored, whatever the umask."""
    storage = FilesystemStorage(tmp_path / "store", reactor, reactor.getThreadPool())
    storage.prepare()
    file_id = new_file_id()
    upload = storage.begin_write(file_id)
    upload.write(b"secret")
    (partial,) = (storage.root / "tmp").iterdir()
    assert mode(partial) == 0o600
    await upload.commit(info(file_id, b"secret"))
    assert mode(storage.root / "files" / file_id[:2] / file_id) == 0o600
    assert_owner_only(storage.root)


@pytest_twisted.ensureDeferred
async def test_database_journals_and_key_are_owner_only(
    umask: int, tmp_path: Path
) -> None:
    """metadata.sqlite, its -wal and -shm and signing.key are 0600 under any umask."""
    from httpupload.backends import signing_keys

    config = config_for(tmp_path / "store")
    backends = open_backends(config, reactor)
    signing_keys(config)
    await backends.metadata.start()
    try:
        record = FileRecord(
            new_file_id(), "a@x", "a.bin", 1, None, "message", 1.0, 2.0, None
        )
        await backends.metadata.reserve(record, 86400, lambda usage: None)
        root = tmp_path / "store"
        for name in (FILE_NAME, f"{FILE_NAME}-wal", f"{FILE_NAME}-shm", KEY_FILE_NAME):
            assert mode(root / name) == 0o600, name
        assert_owner_only(root)
    finally:
        await backends.metadata.close()


def an_earlier_version(root: Path) -> None:
    """A storage folder as a version before owner-only modes left it (umask 022)."""
    file_id = new_file_id()
    for folder in (root, root / "tmp", root / "files", root / "files" / file_id[:2]):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
    for path in (root / "files" / file_id[:2] / file_id, root / "tmp" / "partial"):
        path.write_bytes(b"uploaded")
        path.chmod(0o644)
    legacy = root / "files" / file_id[:2] / new_file_id()  # the folder layout
    legacy.mkdir()
    legacy.chmod(0o755)
    (legacy / "data").write_bytes(b"x")
    (legacy / "data").chmod(0o644)


@pytest_twisted.ensureDeferred
async def test_start_up_tightens_what_an_earlier_version_left_open(
    tmp_path: Path,
) -> None:
    """The folder closes at once; a walk in a thread tightens the rest, logged once."""
    root = tmp_path / "store"
    an_earlier_version(root)
    import sqlite3

    db = sqlite3.connect(root / FILE_NAME)
    db.close()
    (root / FILE_NAME).chmod(0o644)
    events: list[dict[str, Any]] = []
    logged: Deferred[None] = Deferred()

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if "tightened" in event and not events:
            events.append(event)
            # Not from inside the log call: the test goes on from the reactor.
            reactor.callLater(0, logged.callback, None)

    globalLogPublisher.addObserver(observe)
    try:
        backends = open_backends(config_for(root), reactor)
        await backends.metadata.start()
        # Before the reactor walks anything: nobody else can enter the folder.
        assert mode(root) == 0o700
        assert mode(root / FILE_NAME) == 0o600
        await backends.start_storage()
        await logged.addTimeout(30, reactor)
    finally:
        globalLogPublisher.removeObserver(observe)
        await backends.metadata.close()
    assert_owner_only(root)
    # tmp/partial went with the crash leftovers, the folder itself and the
    # database were closed before the walk: tmp, files, the shard, the file,
    # the legacy folder and its data remain.
    assert events[0]["tightened"] == 6
    assert events[0]["failed"] == 0


def test_tightening_leaves_symlinks_and_their_targets(tmp_path: Path) -> None:
    """A symbolic link is not followed: what it points at keeps its mode."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours to judge")
    outside.chmod(0o644)
    root = tmp_path / "store"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    (root / "link").symlink_to(outside)
    assert tighten_modes(root) == (1, 0)
    assert mode(outside) == 0o644
    assert mode(root) == 0o700


def test_uploads_over_http_are_stored_owner_only(umask: int, tmp_path: Path) -> None:
    """A PUT through our own site stores a 0600 file in 0700 folders."""
    storage, clock = inline_filesystem(tmp_path / "store")
    clock.advance(START)
    h = make_harness(storage=storage, clock=clock)
    url = h.upload(b"over the wire")
    file_id = url.rsplit("/", 2)[-2]
    stored = storage.root / "files" / file_id[:2] / file_id
    assert mode(stored) == 0o600
    assert_owner_only(storage.root)


# -- a root-run operator command ------------------------------------------------


class Stat:
    def __init__(self, uid: int, gid: int) -> None:
        self.st_uid, self.st_gid = uid, gid


def fixed_stat(uid: int, gid: int = 100) -> Any:
    return lambda path: Stat(uid, gid)


def no_passwd(uid: int) -> Any:
    raise KeyError(uid)


def test_root_becomes_the_folders_owner() -> None:
    """Run as root on a folder owned by another user: that user, with its group."""
    who = storage_owner(Path("/s"), 0, fixed_stat(1001, 1001), no_passwd)
    assert who == Identity(1001, 1001, None)
    nobody = storage_owner(Path("/s"), 0, fixed_stat(NOBODY, 5))
    assert nobody is not None and nobody.name == "nobody"
    assert nobody.gid == NOBODY  # the user's own group, as the service has it


def test_no_switch_for_other_users_or_root_folders(tmp_path: Path) -> None:
    """Other users, a root-owned folder, or no folder yet: nothing changes."""
    assert storage_owner(Path("/s"), 1001, fixed_stat(1002)) is None
    assert storage_owner(Path("/s"), 0, fixed_stat(0)) is None
    assert storage_owner(tmp_path / "missing", 0) is None


class Calls:
    """Records the calls ``become`` makes; fails where told."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.made: list[tuple[str, object]] = []
        self.fail_at = fail_at
        self.euid = 0

    def _call(self, name: str, value: object) -> None:
        if name == self.fail_at:
            raise PermissionError(1, "Operation not permitted")
        self.made.append((name, value))

    def initgroups(self, username: str, gid: int, /) -> None:
        self._call("initgroups", (username, gid))

    def setgroups(self, groups: list[int], /) -> None:
        self._call("setgroups", groups)

    def setgid(self, gid: int, /) -> None:
        self._call("setgid", gid)

    def setuid(self, uid: int, /) -> None:
        self._call("setuid", uid)
        self.euid = uid

    def geteuid(self) -> int:
        return self.euid


def test_groups_then_group_then_user() -> None:
    """Groups and group are dropped before the user (after it, they could not be)."""
    calls = Calls()
    become(Identity(1001, 1001, "httpupload"), calls)
    assert calls.made == [
        ("initgroups", ("httpupload", 1001)),
        ("setgid", 1001),
        ("setuid", 1001),
    ]
    calls = Calls()
    become(Identity(1001, 7, None), calls)
    assert calls.made == [("setgroups", [7]), ("setgid", 7), ("setuid", 1001)]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_a_switch_that_fails_refuses_in_one_line(tmp_path: Path) -> None:
    """If the user cannot be changed the command stops, naming folder and user."""
    root = tmp_path / "store"
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    config = config_for(root)
    assert run_as_storage_owner(config, euid=1001, calls=Calls()) is None
    with pytest.raises(ConfigError) as refused:
        run_as_storage_owner(config, euid=0, calls=Calls(fail_at="setuid"))
    text = str(refused.value)
    assert "\n" not in text
    assert str(root) in text and "nobody" in text


SWITCHED = """
import os, sqlite3, sys
from pathlib import Path
from httpupload.config import parse_config
from httpupload.privileges import run_as_storage_owner
root = Path(sys.argv[1])
config = parse_config({
    "component": {"jid": "upload.example.org", "secret": "s3cret"},
    "http": {"public_url": "https://upload.example.org/"},
    "storage": {"path": str(root)},
}, root.parent)
who = run_as_storage_owner(config)
db = sqlite3.connect(root / "metadata.sqlite", isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("CREATE TABLE IF NOT EXISTS t (x)")
db.execute("INSERT INTO t VALUES (1)")
(root / "made-by-the-command").write_bytes(b"")
print(who.uid if who else "stayed", os.geteuid(), os.getegid(), os.getgroups())
sys.stdout.flush()
os._exit(0)  # the WAL and SHM files stay, as a command still running leaves them
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_root_run_command_leaves_nothing_root_owned() -> None:
    """As root on the service user's folder, all the command creates is theirs."""
    root = Path(tempfile.mkdtemp(prefix="httpupload-modes-", dir="/tmp"))
    try:
        os.chown(root, NOBODY, NOBODY)
        result = subprocess.run(
            [sys.executable, "-c", SWITCHED, str(root)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[:3] == [str(NOBODY)] * 3
        created = list(root.iterdir())
        assert {p.name for p in created} >= {
            "metadata.sqlite",
            "metadata.sqlite-wal",
            "metadata.sqlite-shm",
            "made-by-the-command",
        }
        for path in created:
            assert os.lstat(path).st_uid == NOBODY, path.name
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest_twisted.ensureDeferred
async def test_httpupload_admin_run_as_root_leaves_the_database_to_its_owner(
    tmp_path: Path,
) -> None:
    """`httpupload-admin` as root on a folder of the service user's runs as that
    user, and a crash leaves every file there (database, -wal, -shm) theirs."""
    from httpupload.metadata import FileRecord
    from httpupload.metadata.sqlite import FILE_NAME, SQLiteMetadataStore
    from httpupload.slots import new_file_id
    from httpupload.storage.filesystem import FilesystemStorage

    store = Path(tempfile.mkdtemp(prefix="httpupload-admin-", dir="/tmp"))
    try:
        # The folder as the service leaves it, then handed to its user.
        FilesystemStorage(store, reactor, reactor.getThreadPool()).prepare()
        metadata = SQLiteMetadataStore(store / FILE_NAME, reactor)
        await metadata.start()
        now = time.time()
        slot = FileRecord(
            file_id=new_file_id(),
            owner="alice@localhost",
            filename="a.txt",
            size=1,
            content_type=None,
            purpose="message",
            created=now,
            slot_expires=now + 300,
            expires=None,
        )
        await metadata.reserve(slot, 86400, lambda usage: None)
        await metadata.close()
        for path in [store, *store.rglob("*")]:
            os.lchown(path, NOBODY, NOBODY)
        config = tmp_path / "httpupload.toml"
        config.write_text(
            '[component]\njid = "upload.localhost"\nsecret = "topsecret"\n'
            '[http]\npublic_url = "https://upload.localhost/"\n'
            f'[storage]\npath = "{store}"\n'
        )
        # delete-user asks before it deletes: the database is open meanwhile,
        # and a kill -9 then leaves its -wal and -shm behind, as a crash would.
        command = subprocess.Popen(
            [*ADMIN, "--config", str(config), "delete-user", "alice@localhost"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wal = store / f"{FILE_NAME}-wal"
            for _ in range(200):
                if wal.exists() or command.poll() is not None:
                    break
                time.sleep(0.05)
            assert wal.exists(), command.communicate(timeout=10)
            # The command itself runs as the folder's owner (real and
            # effective uid), not only the files it makes.
            status = Path(f"/proc/{command.pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uids.split()[1:3] == [str(NOBODY)] * 2, uids
        finally:
            command.kill()
            command.communicate(timeout=10)
        left = [store, *store.rglob("*")]
        assert {p.name: os.lstat(p).st_uid for p in left} == {
            p.name: NOBODY for p in left
        }
    finally:
        subprocess.run(["rm", "-rf", str(store)], check=False)
