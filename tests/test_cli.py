"""The operator command: its commands in memory, and its process as operators run it.

Most tests run a command as ``httpupload-admin`` would (its own parser, its
``run_command``) over the memory metadata store and storage on a ``Clock``,
with ``StringIO`` streams and a fake ``signal`` module: no threads, no wall
clock, no process-wide signal handler.  A few run ``python -m httpupload``
in a separate process, where the process is the point: its exit status and
one line for a bad config, and a run beside a service that holds the same
SQLite store open.

(Over 400 lines on purpose: every command's output, in memory and in a
process, shares the stores and the runner defined here.)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from httpupload.admin import (
    EXIT_DECLINED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    build_parser,
    run_command,
)
from httpupload.admin.output import Progress, human_size
from httpupload.admin.removal import DELETE_USER_WARNING
from httpupload.metadata import FileRecord
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.metadata.sqlite import FILE_NAME, SQLiteMetadataStore
from httpupload.owners import Uploads
from httpupload.policy import SlotPolicy
from httpupload.slots import new_file_id, url_path
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.storage.memory import MemoryStorage
from httpupload.testing import result_of

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://upload.localhost/"
NOW = 1_700_000_000.0
SIGINT = 2

T = TypeVar("T")


def done(work: Deferred[T] | Coroutine[Any, Any, T]) -> T:
    """The result of work on the memory stores, which has finished already."""
    return result_of(ensureDeferred(work))


class FakeSignals:
    """``signal`` for one command: handlers recorded, Ctrl-C pressed by hand."""

    SIGINT = SIGINT

    def __init__(self) -> None:
        self.handler: Any = None
        self.installed: list[Any] = []

    def signal(self, signalnum: int, handler: Any, /) -> Any:
        previous, self.handler = self.handler, handler
        self.installed.append(handler)
        return previous

    def default_int_handler(self, signalnum: int, frame: FrameType | None, /) -> Any:
        raise KeyboardInterrupt

    def press(self) -> None:
        """Ctrl-C: the handler installed now is called."""
        assert callable(self.handler), "no handler for Ctrl-C"
        self.handler(SIGINT, None)


class HookedStorage(MemoryStorage):
    """MemoryStorage that calls ``on_delete`` before each delete."""

    def __init__(self) -> None:
        super().__init__()
        self.on_delete: Callable[[str], None] = lambda file_id: None

    def delete(self, file_id: str) -> Deferred[bool]:
        self.on_delete(file_id)
        return super().delete(file_id)


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


@dataclass
class Admin:
    """The stores an operator command works on, in memory, and a way to run it."""

    clock: Clock = field(default_factory=Clock)
    storage: HookedStorage = field(default_factory=HookedStorage)
    metadata: MemoryMetadataStore = field(default_factory=MemoryMetadataStore)
    signals: FakeSignals = field(default_factory=FakeSignals)

    def __post_init__(self) -> None:
        self.clock.advance(NOW)
        self.uploads = Uploads(
            self.metadata,
            self.storage,
            SlotPolicy(10**9, ("localhost",)),
            BASE,
            self.clock,
            put_base_url=BASE,
        )

    def run(self, *argv: str, stdin: str = "") -> Ran:
        """``httpupload-admin -c … ARGV`` on these stores; its status and output."""
        args = build_parser().parse_args(["--config", "unused.toml", *argv])
        out, err = io.StringIO(), io.StringIO()
        ctx = Context(args, self.uploads, out, err, io.StringIO(stdin), self.signals)
        code = done(run_command(ctx))
        return Ran(code, out.getvalue(), err.getvalue())

    def put(
        self,
        owner: str,
        name: str,
        data: bytes = b"x",
        *,
        age: float = 60.0,
        expires: float | None = 86400.0,
        uploaded: bool = True,
    ) -> FileRecord:
        """A slot granted ``age`` seconds ago, and unless not ``uploaded``,
        its stored file; ``expires`` is relative to now (negative: past due)."""
        record = slot_record(owner, name, data, NOW, age, expires)
        return done(put(self.storage, self.metadata, record, data, uploaded))

    def present(self, record: FileRecord) -> tuple[bool, bool]:
        """(record still there, file still there)."""
        kept = done(self.metadata.get(record.file_id))
        stored = done(self.storage.stat(record.file_id))
        return kept is not None, stored is not None


def slot_record(
    owner: str, name: str, data: bytes, now: float, age: float, expires: float | None
) -> FileRecord:
    return FileRecord(
        file_id=new_file_id(),
        owner=owner,
        filename=name,
        size=len(data),
        content_type="text/plain",
        purpose="message",
        created=now - age,
        slot_expires=now - age + 300,
        expires=None if expires is None else now + expires,
    )


async def put(
    storage: Any, metadata: Any, record: FileRecord, data: bytes, uploaded: bool
) -> FileRecord:
    """The slot's record and, if ``uploaded``, its file and completed record."""
    await metadata.reserve(record, 86400, lambda usage: None)
    if not uploaded:
        return record
    sha = hashlib.sha256(data).hexdigest()
    upload = storage.begin_write(record.file_id)
    upload.write(data)
    info = FileInfo(
        record.file_id, record.filename, len(data), "text/plain", sha, record.created
    )
    await upload.commit(info)
    completed: FileRecord | None = await metadata.complete(
        record.file_id, sha, "text/plain", record.created
    )
    assert completed is not None
    return completed


@pytest.fixture
def admin() -> Admin:
    """Empty stores in memory, the clock at NOW."""
    return Admin()


def url(record: FileRecord) -> str:
    return BASE + url_path(record.file_id, record.filename)


# -- the commands ------------------------------------------------------------------


def test_usage_table_and_json(admin: Admin) -> None:
    """Owners by bytes held, largest first, with totals; expired files not held."""
    admin.put("alice@localhost", "a.bin", b"a" * 1536)
    admin.put("alice@localhost", "b.bin", b"b" * 1000)
    admin.put("bob@localhost", "c.bin", b"c" * 10)
    admin.put("carol@localhost", "old.bin", b"o" * 5000, expires=-10)

    result = admin.run("usage")
    assert result.code == EXIT_OK, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["OWNER", "FILES", "SIZE"]
    assert lines[1].split() == ["alice@localhost", "2", "2.5", "KiB"]
    assert lines[2].split() == ["bob@localhost", "1", "10", "B"]
    assert set(lines[3]) == {"-"}
    assert lines[4].split() == ["2", "owners", "3", "2.5", "KiB"]

    result = admin.run("usage", "--json")
    assert result.code == EXIT_OK
    assert json.loads(result.stdout) == {
        "owners": [
            {"owner": "alice@localhost", "files": 2, "bytes": 2536},
            {"owner": "bob@localhost", "files": 1, "bytes": 10},
        ],
        "total": {"owners": 2, "files": 3, "bytes": 2546},
    }


def test_list_one_owner(admin: Admin) -> None:
    """Name, size, dates and GET URL of the owner's served files, newest first."""
    older = admin.put("alice@localhost", "my cat.jpg", b"m" * 2048, age=7200)
    newer = admin.put("alice@localhost", "notes.txt", b"n" * 5, expires=None)
    admin.put("alice@localhost", "gone.txt", expires=-1)
    admin.put("bob@localhost", "bob.txt")

    result = admin.run("list", "Alice@LocalHost")
    assert result.code == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    header = ["NAME", "SIZE", "UPLOADED", "(UTC)", "EXPIRES", "(UTC)", "URL"]
    assert lines[0].split() == header
    assert lines[1].startswith("notes.txt") and " never " in lines[1]
    assert lines[1].endswith(url(newer))
    assert lines[2].startswith("my cat.jpg") and "2.0 KiB" in lines[2]
    assert lines[2].endswith(url(older))
    assert lines[3] == "2 files, 2.0 KiB"

    result = admin.run("list", "alice@localhost", "--json")
    report = json.loads(result.stdout)
    assert report["owner"] == "alice@localhost"
    assert [f["url"] for f in report["files"]] == [url(newer), url(older)]
    assert report["files"][0]["expires"] is None
    assert report["files"][1]["size"] == 2048

    result = admin.run("list", "nobody@localhost")
    assert (result.code, result.stdout) == (EXIT_OK, "nobody@localhost has no files.\n")
    result = admin.run("list", "localhost")
    assert result.code == EXIT_USAGE
    assert "not a user's JID" in result.stderr


def test_delete_user_asks_first(admin: Admin) -> None:
    """Without --yes it asks; anything but yes deletes nothing (exit 3)."""
    kept = admin.put("alice@localhost", "a.txt", b"abc")
    for answer in ("", "nope\n"):  # end of input (cron), or not a yes
        result = admin.run("delete-user", "alice@localhost", stdin=answer)
        assert result.code == EXIT_DECLINED
        assert "Delete all 1 file (3 B) of alice@localhost" in result.stderr
        assert "Nothing deleted." in result.stderr
        assert result.stdout == ""
    assert admin.present(kept) == (True, True)
    # While it asked, Ctrl-C raised KeyboardInterrupt; then it was put back.
    assert admin.signals.installed[-2:] == [admin.signals.default_int_handler, None]


def test_delete_user(admin: Admin) -> None:
    """Every file and slot of the JID goes, records and bytes; others stay."""
    files = [admin.put("alice@localhost", f"{n}.txt") for n in range(3)]
    slot = admin.put("alice@localhost", "later.txt", uploaded=False)
    other = admin.put("bob@localhost", "b.txt")

    result = admin.run("delete-user", "alice@localhost", stdin="y\n")
    assert result.code == EXIT_OK, result.stderr
    assert result.stdout == "Deleted 4 files and slots of alice@localhost.\n"
    for record in [*files, slot]:
        assert admin.present(record) == (False, False)
    assert admin.present(other) == (True, True)

    result = admin.run("delete-user", "alice@localhost")
    assert (result.code, result.stdout) == (
        EXIT_OK,
        "alice@localhost has no files or slots.\n",
    )
    result = admin.run("delete-user", "bob@localhost", "--yes")
    assert result.code == EXIT_OK and "Deleted 1 file" in result.stdout
    assert result.stderr == ""
    assert admin.present(other) == (False, False)


def test_delete_user_ctrl_c_says_what_stopping_leaves(admin: Admin) -> None:
    """The first Ctrl-C during delete-user warns, truly, that each file goes
    before its record and that stopping keeps the files not reached yet (it
    used to say the records were gone and the files must follow); the
    deletion goes on to the end."""
    files = [admin.put("alice@localhost", f"{n}.txt") for n in range(4)]
    deleted: list[str] = []

    def on_delete(file_id: str) -> None:
        deleted.append(file_id)
        if len(deleted) == 3:
            # Files 1 and 2 are gone with their records; 3 and 4 are intact.
            assert [admin.present(r) for r in files] == [(False, False)] * 2 + [
                (True, True)
            ] * 2
            admin.signals.press()

    admin.storage.on_delete = on_delete
    result = admin.run("delete-user", "alice@localhost", "--yes")
    assert result.code == EXIT_OK
    assert result.stderr == "\n" + DELETE_USER_WARNING + "\n"
    assert "each file before its record" in DELETE_USER_WARNING
    assert "keeps the files not reached yet" in DELETE_USER_WARNING
    assert "records are gone" not in DELETE_USER_WARNING
    assert all(admin.present(r) == (False, False) for r in files)
    assert admin.signals.handler is None  # the handler before it, put back


def test_take_down(admin: Admin) -> None:
    """A GET or PUT URL removes its file, whoever owns it; a second time, exit 1."""
    first = admin.put("alice@localhost", "my cat.jpg", b"c" * 2048)
    second = admin.put("bob@localhost", "b.txt")
    kept = admin.put("bob@localhost", "c.txt")

    result = admin.run("take-down", url(first))
    assert result.code == EXIT_OK, result.stderr
    assert result.stdout.startswith(
        "Removed my cat.jpg (2.0 KiB) of alice@localhost, from "
    )
    assert admin.present(first) == (False, False)

    result = admin.run("take-down", url(first))
    assert (result.code, result.stdout) == (
        EXIT_NOTHING,
        f"Nothing matched {url(first)}\n",
    )

    # A PUT URL (under public_url), its token ignored.
    put_url = f"{BASE}{second.file_id}/b.txt?token=v1.abc.def"
    result = admin.run("take-down", put_url)
    assert result.code == EXIT_OK, result.stderr
    assert admin.present(second) == (False, False)
    assert admin.present(kept) == (True, True)

    result = admin.run("take-down", "https://upload.localhost/../etc")
    assert result.code == EXIT_USAGE
    assert "not a file URL" in result.stderr


def test_take_down_reads_the_whole_url(admin: Admin) -> None:
    """A fragment or query is never searched for a path, and a URL of another
    host is not this service's: exit 2 with the reason, nothing removed."""
    a = admin.put("alice@localhost", "a.png")
    b = admin.put("bob@localhost", "b.png")
    for text, reason in (
        (f"{url(a)}#/{b.file_id}/b.png", "has a fragment"),
        (f"{url(a)}?next=/{b.file_id}/b.png", "has a query"),
        (f"http://elsewhere:5050/{b.file_id}/b.png", "not under"),
        (f"{BASE}x/{b.file_id}/b.png", "not a base path"),
    ):
        result = admin.run("take-down", text)
        assert result.code == EXIT_USAGE, text
        assert result.stderr.startswith("httpupload: not a file URL: "), text
        assert reason in result.stderr, (text, result.stderr)
        assert result.stdout == ""
    assert admin.present(a) == (True, True)
    assert admin.present(b) == (True, True)


def test_names_and_owners_are_shown_escaped(admin: Admin) -> None:
    """U+202E and control characters in stored names and owners show as
    escapes in text output; JSON escapes them as \\u202e."""
    name = "invoice\u202efdp.exe"
    shown = "invoice\\u202efdp.exe"
    record = admin.put("alice@localhost", name)
    admin.put("eve\x1b[2J@localhost", "e.txt")

    result = admin.run("list", "alice@localhost")
    assert result.code == EXIT_OK, result.stderr
    assert result.stdout.splitlines()[1].startswith(shown + " ")
    assert "\u202e" not in result.stdout

    result = admin.run("list", "alice@localhost", "--json")
    assert "\\u202e" in result.stdout and "\u202e" not in result.stdout
    assert json.loads(result.stdout)["files"][0]["name"] == name

    result = admin.run("usage")
    assert "eve\\x1b[2J@localhost" in result.stdout
    assert "\x1b" not in result.stdout
    result = admin.run("usage", "--json")
    assert "\x1b" not in result.stdout and "\\u001b" in result.stdout

    result = admin.run("take-down", url(record))
    assert result.code == EXIT_OK, result.stderr
    assert result.stdout.startswith(f"Removed {shown} (1 B) of alice@localhost")


def test_purge_expired(admin: Admin) -> None:
    """Every file due now goes, batch by batch; files still served stay."""
    due = [admin.put("alice@localhost", f"{n}.txt", expires=-5) for n in range(5)]
    live = admin.put("alice@localhost", "live.txt")
    forever = admin.put("bob@localhost", "forever.txt", expires=None)

    result = admin.run("purge-expired", "--batch", "2")
    assert result.code == EXIT_OK, result.stderr
    assert result.stdout == "Removed 5 expired files and dead slots.\n"
    for record in due:
        assert admin.present(record) == (False, False)
    assert admin.present(live) == (True, True)
    assert admin.present(forever) == (True, True)

    result = admin.run("purge-expired")
    assert (result.code, result.stdout) == (EXIT_OK, "Nothing is due.\n")


# -- the process -------------------------------------------------------------------


def write_config(path: Path, store: str = "store", extra: str = "") -> Path:
    path.write_text(
        '[component]\njid = "upload.localhost"\nsecret = "topsecret"\n'
        f'[http]\npublic_url = "{BASE}"\n'
        f'[storage]\npath = "{store}"\n{extra}'
    )
    return path


def cli(
    *args: str, config: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python -m httpupload ARGS`` in a separate process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "httpupload"]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(
        [*command, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_one_line_exit_2(tmp_path: Path) -> None:
    """A bad config: one line naming the key, exit 2, nothing made.

    (``--config`` after the command, which is accepted too.)
    """
    config = write_config(tmp_path / "c.toml", extra="[limits]\nmax_filesize = 1\n")
    result = cli("usage", "--config", str(config))
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert result.stderr == (
        "httpupload: config error: [limits] max_filesize: unknown key "
        "(did you mean 'max_file_size'?)\n"
    )
    assert not (tmp_path / "store").exists()


def test_storage_never_used_is_refused(tmp_path: Path) -> None:
    """A folder the service never ran on is a config error; nothing is created."""
    (tmp_path / "store").mkdir()
    config = write_config(tmp_path / "c.toml")
    result = cli("purge-expired", config=config)
    assert result.returncode == EXIT_USAGE
    assert result.stderr.startswith("httpupload: config error: [storage] path: ")
    assert list((tmp_path / "store").iterdir()) == []

    result = cli("usage")
    assert result.returncode == EXIT_USAGE
    assert "--config FILE is required" in result.stderr


@dataclass
class Store:
    config: Path
    storage: FilesystemStorage
    metadata: SQLiteMetadataStore


@pytest_twisted.async_yield_fixture
async def service_store(tmp_path: Path) -> AsyncIterator[Store]:
    """The service's side of a storage folder, open while the command runs
    (the real SQLite store on its thread: what the test is about)."""
    from twisted.internet import reactor

    threads: Any = reactor
    storage = FilesystemStorage(tmp_path / "store", threads, threads.getThreadPool())
    storage.prepare()
    metadata = SQLiteMetadataStore(tmp_path / "store" / FILE_NAME, threads)
    await metadata.start()
    yield Store(write_config(tmp_path / "c.toml"), storage, metadata)
    await metadata.close()


@pytest_twisted.ensureDeferred
async def test_a_run_beside_the_service(service_store: Store) -> None:
    """``python -m httpupload`` lists and deletes on the folder and SQLite
    store a running service holds open; the service sees the deletion."""
    s = service_store
    now = time.time()
    mine = await put(
        s.storage,
        s.metadata,
        slot_record("alice@localhost", "a.txt", b"abc", now, 60, 86400),
        b"abc",
        True,
    )
    result = cli("list", "alice@localhost", "--json", config=s.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert [f["url"] for f in json.loads(result.stdout)["files"]] == [url(mine)]
    result = cli("delete-user", "alice@localhost", config=s.config, stdin="yes\n")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == "Deleted 1 file and slots of alice@localhost.\n"
    assert await s.metadata.get(mine.file_id) is None
    assert await s.storage.stat(mine.file_id) is None


# -- output --------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal() -> None:
    """On a terminal: one line redrawn with \\r, at most every interval, then \\n."""
    now = [0.0]
    out = Terminal()
    progress = Progress("Deleting", "files", out, clock=lambda: now[0])
    progress.update(1, 4)
    now[0] = 0.05
    progress.update(2, 4)  # too soon: not drawn
    now[0] = 0.2
    progress.update(3, 4)
    progress.update(4, 4)
    progress.finish()
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].startswith("Deleting [" + "#" * 8 + "-" * 22 + "] 1/4 files  25%")
    assert "3/4 files  75%" in frames[1]
    assert frames[-1].startswith("Deleting [" + "#" * 30 + "] 4/4 files 100%")
    assert frames[-1].endswith("\n") and len(frames) == 3


def test_progress_in_a_log() -> None:
    """Elsewhere: a plain line every interval; a short run prints nothing."""
    now = [0.0]
    out = io.StringIO()
    progress = Progress("Purging", "removed", out, clock=lambda: now[0])
    progress.update(200)
    progress.finish()
    assert out.getvalue() == ""

    progress = Progress("Purging", "removed", out, clock=lambda: now[0])
    for step in range(1, 13):
        now[0] = step
        progress.update(step * 200)
    progress.finish()
    assert out.getvalue().splitlines() == [
        "Purging: 1000 removed",
        "Purging: 2000 removed",
        "Purging: 2400 removed",
    ]

    out = io.StringIO()
    progress = Progress("Deleting", "files", out, clock=lambda: now[0])
    now[0] += 5
    progress.update(30, 100)
    progress.finish()
    assert out.getvalue() == "Deleting: 30/100 files (30%)\n"  # not twice


def test_human_size() -> None:
    """Sizes in the listings: bytes under 1 KiB, then binary units, one decimal."""
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
    ]
