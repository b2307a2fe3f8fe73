"""The operator command, run as operators run it: a separate process.

Each test fills a storage folder through the real pieces (FilesystemStorage
and SQLiteMetadataStore, started in this process) and keeps the store open
while the command runs, as the service would, then checks both sides.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from httpupload.cli import (
    EXIT_DECLINED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    human_size,
)
from httpupload.metadata import FileRecord
from httpupload.metadata.sqlite import FILE_NAME, SQLiteMetadataStore
from httpupload.slots import new_file_id, url_path
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemStorage

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://upload.localhost/"


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


@dataclass
class Store:
    config: Path
    storage: FilesystemStorage
    metadata: SQLiteMetadataStore

    async def put(
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
        now = time.time()
        file_id = new_file_id()
        sha = hashlib.sha256(data).hexdigest()
        record = FileRecord(
            file_id=file_id,
            owner=owner,
            filename=name,
            size=len(data),
            content_type="text/plain",
            purpose="message",
            created=now - age,
            slot_expires=now - age + 300,
            expires=None if expires is None else now + expires,
        )
        await self.metadata.reserve(record, 86400, lambda usage: None)
        if not uploaded:
            return record
        upload = self.storage.begin_write(file_id)
        upload.write(data)
        await upload.commit(
            FileInfo(file_id, name, len(data), "text/plain", sha, now - age)
        )
        done = await self.metadata.complete(file_id, sha, "text/plain", now - age)
        assert done is not None
        return done

    async def present(self, record: FileRecord) -> tuple[bool, bool]:
        """(record still there, file still there)."""
        kept = await self.metadata.get(record.file_id)
        stored = await self.storage.stat(record.file_id)
        return kept is not None, stored is not None


@pytest_twisted.async_yield_fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """The service's side of a storage folder, open while the command runs."""
    storage = FilesystemStorage(tmp_path / "store", reactor, reactor.getThreadPool())
    storage.prepare()
    metadata = SQLiteMetadataStore(tmp_path / "store" / FILE_NAME, reactor)
    await metadata.start()
    yield Store(write_config(tmp_path / "c.toml"), storage, metadata)
    await metadata.stop()


def url(record: FileRecord) -> str:
    return BASE + url_path(record.file_id, record.filename)


@pytest_twisted.ensureDeferred
async def test_usage_table_and_json(store: Store) -> None:
    """Owners by bytes held, largest first, with totals; expired files not held."""
    await store.put("alice@localhost", "a.bin", b"a" * 1536)
    await store.put("alice@localhost", "b.bin", b"b" * 1000)
    await store.put("bob@localhost", "c.bin", b"c" * 10)
    await store.put("carol@localhost", "old.bin", b"o" * 5000, expires=-10)

    result = cli("usage", config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["OWNER", "FILES", "SIZE"]
    assert lines[1].split() == ["alice@localhost", "2", "2.5", "KiB"]
    assert lines[2].split() == ["bob@localhost", "1", "10", "B"]
    assert set(lines[3]) == {"-"}
    assert lines[4].split() == ["2", "owners", "3", "2.5", "KiB"]

    result = cli("usage", "--json", config=store.config)
    assert result.returncode == EXIT_OK
    assert json.loads(result.stdout) == {
        "owners": [
            {"owner": "alice@localhost", "files": 2, "bytes": 2536},
            {"owner": "bob@localhost", "files": 1, "bytes": 10},
        ],
        "total": {"owners": 2, "files": 3, "bytes": 2546},
    }


@pytest_twisted.ensureDeferred
async def test_list_one_owner(store: Store) -> None:
    """Name, size, dates and GET URL of the owner's served files, newest first."""
    older = await store.put("alice@localhost", "my cat.jpg", b"m" * 2048, age=7200)
    newer = await store.put("alice@localhost", "notes.txt", b"n" * 5, expires=None)
    await store.put("alice@localhost", "gone.txt", expires=-1)
    await store.put("bob@localhost", "bob.txt")

    result = cli("list", "Alice@LocalHost", config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    header = ["NAME", "SIZE", "UPLOADED", "(UTC)", "EXPIRES", "(UTC)", "URL"]
    assert lines[0].split() == header
    assert lines[1].startswith("notes.txt") and " never " in lines[1]
    assert lines[1].endswith(url(newer))
    assert lines[2].startswith("my cat.jpg") and "2.0 KiB" in lines[2]
    assert lines[2].endswith(url(older))
    assert lines[3] == "2 files, 2.0 KiB"

    result = cli("list", "alice@localhost", "--json", config=store.config)
    report = json.loads(result.stdout)
    assert report["owner"] == "alice@localhost"
    assert [f["url"] for f in report["files"]] == [url(newer), url(older)]
    assert report["files"][0]["expires"] is None
    assert report["files"][1]["size"] == 2048

    result = cli("list", "nobody@localhost", config=store.config)
    assert (result.returncode, result.stdout) == (
        EXIT_OK,
        "nobody@localhost has no files.\n",
    )
    result = cli("list", "localhost", config=store.config)
    assert result.returncode == EXIT_USAGE
    assert "not a user's JID" in result.stderr


@pytest_twisted.ensureDeferred
async def test_delete_user_asks_first(store: Store) -> None:
    """Without --yes it asks; anything but yes deletes nothing (exit 3)."""
    kept = await store.put("alice@localhost", "a.txt", b"abc")
    for answer in ("", "nope\n"):  # end of input (cron), or not a yes
        result = cli(
            "delete-user", "alice@localhost", config=store.config, stdin=answer
        )
        assert result.returncode == EXIT_DECLINED
        assert "Delete all 1 file (3 B) of alice@localhost" in result.stderr
        assert "Nothing deleted." in result.stderr
        assert result.stdout == ""
    assert await store.present(kept) == (True, True)


@pytest_twisted.ensureDeferred
async def test_delete_user(store: Store) -> None:
    """Every file and slot of the JID goes, records and bytes; others stay."""
    files = [await store.put("alice@localhost", f"{n}.txt") for n in range(3)]
    slot = await store.put("alice@localhost", "later.txt", uploaded=False)
    other = await store.put("bob@localhost", "b.txt")

    result = cli("delete-user", "alice@localhost", config=store.config, stdin="y\n")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == "Deleted 4 files and slots of alice@localhost.\n"
    for record in [*files, slot]:
        assert await store.present(record) == (False, False)
    assert await store.present(other) == (True, True)

    result = cli("delete-user", "alice@localhost", config=store.config)
    assert (result.returncode, result.stdout) == (
        EXIT_OK,
        "alice@localhost has no files or slots.\n",
    )
    result = cli("delete-user", "bob@localhost", "--yes", config=store.config)
    assert result.returncode == EXIT_OK and "Deleted 1 file" in result.stdout
    assert result.stderr == ""
    assert await store.present(other) == (False, False)


@pytest_twisted.ensureDeferred
async def test_take_down(store: Store) -> None:
    """A GET or PUT URL removes its file, whoever owns it; a second time, exit 1."""
    first = await store.put("alice@localhost", "my cat.jpg", b"c" * 2048)
    second = await store.put("bob@localhost", "b.txt")
    kept = await store.put("bob@localhost", "c.txt")

    result = cli("take-down", url(first), config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(
        "Removed my cat.jpg (2.0 KiB) of alice@localhost, from "
    )
    assert await store.present(first) == (False, False)

    result = cli("take-down", url(first), config=store.config)
    assert (result.returncode, result.stdout) == (
        EXIT_NOTHING,
        f"Nothing matched {url(first)}\n",
    )

    # A PUT URL (under public_url), its token ignored.
    put_url = f"{BASE}{second.file_id}/b.txt?token=v1.abc.def"
    result = cli("take-down", put_url, config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert await store.present(second) == (False, False)
    assert await store.present(kept) == (True, True)

    result = cli("take-down", "https://upload.localhost/../etc", config=store.config)
    assert result.returncode == EXIT_USAGE
    assert "not a file URL" in result.stderr


@pytest_twisted.ensureDeferred
async def test_take_down_reads_the_whole_url(store: Store) -> None:
    """A fragment or query is never searched for a path, and a URL of another
    host is not this service's: exit 2 with the reason, nothing removed."""
    a = await store.put("alice@localhost", "a.png")
    b = await store.put("bob@localhost", "b.png")
    for text, reason in (
        (f"{url(a)}#/{b.file_id}/b.png", "has a fragment"),
        (f"{url(a)}?next=/{b.file_id}/b.png", "has a query"),
        (f"http://elsewhere:5050/{b.file_id}/b.png", "not under"),
        (f"{BASE}x/{b.file_id}/b.png", "not a base path"),
    ):
        result = cli("take-down", text, config=store.config)
        assert result.returncode == EXIT_USAGE, text
        assert result.stderr.startswith("httpupload: not a file URL: "), text
        assert reason in result.stderr, (text, result.stderr)
        assert result.stdout == ""
    assert await store.present(a) == (True, True)
    assert await store.present(b) == (True, True)


@pytest_twisted.ensureDeferred
async def test_names_and_owners_are_shown_escaped(store: Store) -> None:
    """U+202E and control characters in stored names and owners show as
    escapes in text output; JSON escapes them as \\u202e."""
    name = "invoice\u202efdp.exe"
    shown = "invoice\\u202efdp.exe"
    record = await store.put("alice@localhost", name)
    await store.put("eve\x1b[2J@localhost", "e.txt")

    result = cli("list", "alice@localhost", config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.splitlines()[1].startswith(shown + " ")
    assert "\u202e" not in result.stdout

    result = cli("list", "alice@localhost", "--json", config=store.config)
    assert "\\u202e" in result.stdout and "\u202e" not in result.stdout
    assert json.loads(result.stdout)["files"][0]["name"] == name

    result = cli("usage", config=store.config)
    assert "eve\\x1b[2J@localhost" in result.stdout
    assert "\x1b" not in result.stdout
    result = cli("usage", "--json", config=store.config)
    assert "\x1b" not in result.stdout and "\\u001b" in result.stdout

    result = cli("take-down", url(record), config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(f"Removed {shown} (1 B) of alice@localhost")


@pytest_twisted.ensureDeferred
async def test_purge_expired(store: Store) -> None:
    """Every file due now goes, batch by batch; files still served stay."""
    due = [await store.put("alice@localhost", f"{n}.txt", expires=-5) for n in range(5)]
    live = await store.put("alice@localhost", "live.txt")
    forever = await store.put("bob@localhost", "forever.txt", expires=None)

    result = cli("purge-expired", "--batch", "2", config=store.config)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == "Removed 5 expired files and dead slots.\n"
    for record in due:
        assert await store.present(record) == (False, False)
    assert await store.present(live) == (True, True)
    assert await store.present(forever) == (True, True)

    result = cli("purge-expired", config=store.config)
    assert (result.returncode, result.stdout) == (EXIT_OK, "Nothing is due.\n")


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
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
    ]
