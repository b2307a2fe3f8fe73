"""Owner and operator operations: file before record, URLs that must match."""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock

from httpupload.expiry import reconcile
from httpupload.metadata import FileRecord
from httpupload.metadata.sqlite import SQLiteMetadataStore
from httpupload.owners import ESCAPED_CATEGORIES, Uploads, display
from httpupload.policy import SlotPolicy
from httpupload.slots import new_file_id, url_path
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.urls import BadFileUrl

BASE = "https://upload.example.org/"
PUT_BASE = "https://put.example.org/up/"
POLICY = SlotPolicy(10**9, ("example.org",))


@pytest_twisted.async_yield_fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    clock = Clock()
    clock.advance(1_700_000_000)
    storage = FilesystemStorage(tmp_path / "s", reactor, reactor.getThreadPool())
    storage.prepare()
    store = SQLiteMetadataStore(tmp_path / "s" / "metadata.sqlite", reactor)
    await store.start()
    yield Uploads(store, storage, POLICY, BASE, clock)
    await store.stop()


async def stored(uploads: Uploads, owner: str, name: str = "a.txt") -> str:
    file_id = new_file_id()
    now = uploads.clock.seconds()
    await uploads.metadata.reserve(
        FileRecord(file_id, owner, name, 3, None, "message", now, now + 300, None),
        86400,
        lambda usage: None,
    )
    pending = uploads.storage.begin_write(file_id)
    pending.write(b"abc")
    await pending.commit(FileInfo(file_id, name, 3, "text/plain", "00" * 32, now))
    await uploads.metadata.complete(file_id, "00" * 32, "text/plain", now)
    return file_id


@pytest_twisted.ensureDeferred
async def test_list_and_delete_only_own_files(uploads: Uploads) -> None:
    """Owners see their files with GET URLs; they cannot delete others' files."""
    mine = await stored(uploads, "romeo@example.org", "très.txt")
    theirs = await stored(uploads, "juliet@example.org")
    (listed,) = await uploads.list("romeo@example.org")
    assert listed.url == BASE + url_path(mine, "très.txt")
    assert await uploads.delete("romeo@example.org", theirs) is None
    assert await uploads.storage.stat(theirs) is not None
    assert (await uploads.delete("romeo@example.org", mine)).file_id == mine  # type: ignore[union-attr]
    assert await uploads.storage.stat(mine) is None
    assert await uploads.list("romeo@example.org") == []


@pytest_twisted.ensureDeferred
async def test_account_removal_interrupted_never_resurrects(uploads: Uploads) -> None:
    """Files go before records: a removal cut short leaves nothing to adopt."""
    ids = [await stored(uploads, "gone@example.org") for _ in range(4)]
    calls = []

    def stop_after_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    try:
        await uploads.delete_all("gone@example.org", stop_after_two)
    except KeyboardInterrupt:
        pass
    assert calls == [1, 2]
    adopted, _, _ = await reconcile(
        uploads.metadata, uploads.storage, POLICY, uploads.clock
    )
    assert adopted == 0
    assert await uploads.delete_all("gone@example.org") == 2
    for file_id in ids:
        assert await uploads.storage.stat(file_id) is None
        assert await uploads.metadata.get(file_id) is None


@pytest_twisted.ensureDeferred
async def test_take_down(uploads: Uploads) -> None:
    """A take-down needs the URL's id and name; files without records count too."""
    file_id = await stored(uploads, "romeo@example.org", "x.png")
    assert await uploads.take_down(BASE + url_path(file_id, "other.png")) is None
    removed = await uploads.take_down(BASE + url_path(file_id, "x.png") + "?token=t")
    assert removed is not None and removed.file_id == file_id
    assert await uploads.storage.stat(file_id) is None
    orphan = await stored(uploads, "romeo@example.org", "y.png")
    await uploads.metadata.delete(orphan)
    removed = await uploads.take_down(BASE + url_path(orphan, "y.png"))
    assert removed is not None and removed.filename == "y.png"
    assert await uploads.storage.stat(orphan) is None
    with pytest.raises(BadFileUrl):
        await uploads.take_down("https://elsewhere/nothing")


@pytest_twisted.ensureDeferred
async def test_take_down_reads_no_path_from_a_fragment(uploads: Uploads) -> None:
    """``URL_A#/<id B>/<name B>`` is refused and removes neither A nor B."""
    a = await stored(uploads, "romeo@example.org", "a.png")
    b = await stored(uploads, "juliet@example.org", "b.png")
    for text in (
        BASE + url_path(a, "a.png") + "#/" + url_path(b, "b.png"),
        BASE + url_path(a, "a.png") + "?/" + url_path(b, "b.png"),
        BASE + url_path(a, "a.png") + "/../" + url_path(b, "b.png"),
    ):
        with pytest.raises(BadFileUrl):
            await uploads.take_down(text)
    for file_id in (a, b):
        assert await uploads.metadata.get(file_id) is not None
        assert await uploads.storage.stat(file_id) is not None


@pytest_twisted.ensureDeferred
async def test_take_down_by_put_url(tmp_path: Path) -> None:
    """With a PUT base (public_url) as well, its URLs name files too."""
    clock = Clock()
    clock.advance(1_700_000_000)
    storage = FilesystemStorage(tmp_path / "s", reactor, reactor.getThreadPool())
    storage.prepare()
    store = SQLiteMetadataStore(tmp_path / "s" / "metadata.sqlite", reactor)
    await store.start()
    try:
        uploads = Uploads(store, storage, POLICY, BASE, clock, put_base_url=PUT_BASE)
        file_id = await stored(uploads, "romeo@example.org", "a.txt")
        removed = await uploads.take_down(PUT_BASE + file_id + "/a.txt?token=x")
        assert removed is not None and removed.file_id == file_id
    finally:
        await store.stop()


def test_display_escapes_what_would_hide_or_reorder_text() -> None:
    """Format, control, separator, private and unassigned characters show as
    escapes; other text (accents, scripts, spaces) is left as it is."""
    assert display("invoice\u202efdp.exe") == "invoice\\u202efdp.exe"
    assert display("a\x1b[31mb\x7f\u0085") == "a\\x1b[31mb\\x7f\\x85"
    assert display("line\u2028para\u2029") == "line\\u2028para\\u2029"
    assert display("zw\u200bj\ufeff") == "zw\\u200bj\\ufeff"
    assert display("\ue000\U000e0001\ud800") == "\\ue000\\U000e0001\\ud800"
    assert display("\U0010ffff") == "\\U0010ffff"  # a noncharacter: Cn
    assert display("très cool 写真 é.jpg") == "très cool 写真 é.jpg"


@given(st.text())
def test_display_leaves_nothing_that_hides_or_reorders(text: str) -> None:
    """No character of the escaped categories survives, and the text can be
    printed (no lone surrogate); printable ASCII is unchanged."""
    shown = display(text)
    assert not any(unicodedata.category(c) in ESCAPED_CATEGORIES for c in shown)
    shown.encode("utf-8")
    if text.isascii() and text.isprintable():
        assert shown == text
