"""Owner and operator operations: file before record, URLs that must match.

On the memory metadata store and storage, on a ``Clock``: every operation
has finished when it returns.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from httpupload.expiry import reconcile
from httpupload.metadata import FileRecord
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.owners import ESCAPED_CATEGORIES, Uploads, display
from httpupload.policy import SlotPolicy
from httpupload.slots import new_file_id, url_path
from httpupload.storage import FileInfo
from httpupload.storage.memory import MemoryStorage
from httpupload.testing import result_of
from httpupload.urls import BadFileUrl

BASE = "https://upload.example.org/"
PUT_BASE = "https://put.example.org/up/"
POLICY = SlotPolicy(10**9, ("example.org",))

T = TypeVar("T")


def done(work: Deferred[T] | Coroutine[Any, Any, T]) -> T:
    """The result of work on the memory stores, which has finished already."""
    return result_of(ensureDeferred(work))


def make_uploads(put_base_url: str | None = None) -> Uploads:
    clock = Clock()
    clock.advance(1_700_000_000)
    store = MemoryMetadataStore()
    done(store.start())
    return Uploads(
        store, MemoryStorage(), POLICY, BASE, clock, put_base_url=put_base_url
    )


@pytest.fixture
def uploads() -> Uploads:
    """Uploads over empty memory stores, the clock at 1_700_000_000."""
    return make_uploads()


def stored(uploads: Uploads, owner: str, name: str = "a.txt") -> str:
    """A finished upload of ``owner``: its record and its file; its id."""
    file_id = new_file_id()
    now = uploads.clock.seconds()
    done(
        uploads.metadata.reserve(
            FileRecord(file_id, owner, name, 3, None, "message", now, now + 300, None),
            86400,
            lambda usage: None,
        )
    )
    pending = uploads.storage.begin_write(file_id)
    pending.write(b"abc")
    done(pending.commit(FileInfo(file_id, name, 3, "text/plain", "00" * 32, now)))
    done(uploads.metadata.complete(file_id, "00" * 32, "text/plain", now))
    return file_id


def test_list_and_delete_only_own_files(uploads: Uploads) -> None:
    """Owners see their files with GET URLs; they cannot delete others' files."""
    mine = stored(uploads, "romeo@example.org", "très.txt")
    theirs = stored(uploads, "juliet@example.org")
    (listed,) = done(uploads.list("romeo@example.org"))
    assert listed.url == BASE + url_path(mine, "très.txt")
    assert done(uploads.delete("romeo@example.org", theirs)) is None
    assert done(uploads.storage.stat(theirs)) is not None
    deleted = done(uploads.delete("romeo@example.org", mine))
    assert deleted is not None and deleted.file_id == mine
    assert done(uploads.storage.stat(mine)) is None
    assert done(uploads.list("romeo@example.org")) == []


def test_account_removal_interrupted_never_resurrects(uploads: Uploads) -> None:
    """Files go before records: a removal cut short leaves nothing to adopt."""
    ids = [stored(uploads, "gone@example.org") for _ in range(4)]
    calls = []

    def stop_after_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        done(uploads.delete_all("gone@example.org", stop_after_two))
    assert calls == [1, 2]
    adopted, _, _ = done(
        reconcile(uploads.metadata, uploads.storage, POLICY, uploads.clock)
    )
    assert adopted == 0
    assert done(uploads.delete_all("gone@example.org")) == 2
    for file_id in ids:
        assert done(uploads.storage.stat(file_id)) is None
        assert done(uploads.metadata.get(file_id)) is None


def test_account_removal_takes_partial_uploads_too(uploads: Uploads) -> None:
    """A slot whose upload broke off (#12) leaves no partial bytes behind when
    its owner's files are removed; another owner's partial stays."""
    storage = uploads.storage
    assert isinstance(storage, MemoryStorage)
    now = uploads.clock.seconds()
    ids = {}
    for owner in ("gone@example.org", "stays@example.org"):
        file_id = new_file_id()
        record = FileRecord(
            file_id, owner, "a.bin", 9, None, "message", now, now + 300, None
        )
        done(uploads.metadata.reserve(record, 86400, lambda usage: None))
        kept = storage.begin_partial(file_id, 0)
        kept.write(b"abc")
        done(kept.keep())
        ids[owner] = file_id
    assert done(uploads.delete_all("gone@example.org")) == 1
    assert ids["gone@example.org"] not in storage.partials
    assert ids["stays@example.org"] in storage.partials


def test_take_down(uploads: Uploads) -> None:
    """A take-down needs the URL's id and name; files without records count too."""
    file_id = stored(uploads, "romeo@example.org", "x.png")
    assert done(uploads.take_down(BASE + url_path(file_id, "other.png"))) is None
    removed = done(uploads.take_down(BASE + url_path(file_id, "x.png") + "?token=t"))
    assert removed is not None and removed.file_id == file_id
    assert done(uploads.storage.stat(file_id)) is None
    orphan = stored(uploads, "romeo@example.org", "y.png")
    done(uploads.metadata.delete(orphan))
    removed = done(uploads.take_down(BASE + url_path(orphan, "y.png")))
    assert removed is not None and removed.filename == "y.png"
    assert done(uploads.storage.stat(orphan)) is None
    with pytest.raises(BadFileUrl):
        done(uploads.take_down("https://elsewhere/nothing"))


def test_take_down_reads_no_path_from_a_fragment(uploads: Uploads) -> None:
    """``URL_A#/<id B>/<name B>`` is refused and removes neither A nor B."""
    a = stored(uploads, "romeo@example.org", "a.png")
    b = stored(uploads, "juliet@example.org", "b.png")
    for text in (
        BASE + url_path(a, "a.png") + "#/" + url_path(b, "b.png"),
        BASE + url_path(a, "a.png") + "?/" + url_path(b, "b.png"),
        BASE + url_path(a, "a.png") + "/../" + url_path(b, "b.png"),
    ):
        with pytest.raises(BadFileUrl):
            done(uploads.take_down(text))
    for file_id in (a, b):
        assert done(uploads.metadata.get(file_id)) is not None
        assert done(uploads.storage.stat(file_id)) is not None


def test_take_down_by_put_url() -> None:
    """With a PUT base (public_url) as well, its URLs name files too."""
    uploads = make_uploads(put_base_url=PUT_BASE)
    file_id = stored(uploads, "romeo@example.org", "a.txt")
    removed = done(uploads.take_down(PUT_BASE + file_id + "/a.txt?token=x"))
    assert removed is not None and removed.file_id == file_id


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
