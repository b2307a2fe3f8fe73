"""What every storage that keeps partial uploads (``KeepsPartials``) must do.

Memory and filesystem keep partials; S3 does not yet (docs/resumable.md),
so it is not a ``KeepsPartials`` and the service does not offer resumption
on it.  Hypothesis cuts an upload at arbitrary points: whatever is kept,
resumed and committed, the stored file is the uploaded bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_fakes import inline_filesystem
from twisted.internet.defer import Deferred

from httpupload.slots import new_file_id
from httpupload.storage import FileInfo, KeepsPartials
from httpupload.storage.memory import MemoryStorage

_T = TypeVar("_T")


def _result(d: Deferred[_T]) -> Any:
    """The result of a Deferred that has fired (these storages answer inline)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the storage did not answer at once"
    return out[0]


def _make(kind: str, root: Path) -> KeepsPartials:
    if kind == "memory":
        return MemoryStorage()
    storage, _reactor = inline_filesystem(root)
    return storage


def _info(file_id: str, data: bytes) -> FileInfo:
    return FileInfo(
        file_id,
        "f.bin",
        len(data),
        "application/octet-stream",
        hashlib.sha256(data).hexdigest(),
        1.0,
    )


def _stored(storage: Any, file_id: str) -> bytes | None:
    if isinstance(storage, MemoryStorage):
        found = storage.files.get(file_id)
        return None if found is None else found[1]
    opened = _result(storage.open_read(file_id))
    if opened is None:
        return None
    opened.close()
    path = storage.root / "files" / file_id[:2] / file_id
    return path.read_bytes()[: opened.info.size]


KINDS = ["memory", "filesystem"]


@pytest.mark.parametrize("kind", KINDS)
def test_both_storages_keep_partials(kind: str, tmp_path: Path) -> None:
    """Memory and filesystem storage declare the capability."""
    assert isinstance(_make(kind, tmp_path / "s"), KeepsPartials)


@pytest.mark.parametrize("kind", KINDS)
def test_kept_bytes_resume_and_commit(kind: str, tmp_path: Path) -> None:
    """Kept bytes survive the write; an append from their end completes the file."""
    storage = _make(kind, tmp_path / "s")
    file_id = new_file_id()
    assert _result(storage.partial_size(file_id)) is None
    first = storage.begin_partial(file_id, 0)
    first.write(b"hello ")
    assert _result(first.keep()) == 6
    assert _result(storage.partial_size(file_id)) == 6
    assert _stored(storage, file_id) is None  # nothing visible yet
    digest = _result(storage.partial_sha256(file_id, 6))
    assert digest.hexdigest() == hashlib.sha256(b"hello ").hexdigest()
    second = storage.begin_partial(file_id, 6)
    second.write(b"world")
    _result(second.commit(_info(file_id, b"hello world")))
    assert _stored(storage, file_id) == b"hello world"
    assert _result(storage.partial_size(file_id)) is None


@pytest.mark.parametrize("kind", KINDS)
def test_an_offset_past_the_kept_bytes_is_refused(kind: str, tmp_path: Path) -> None:
    """No write can leave a hole: an offset beyond what is kept is a ValueError."""
    storage = _make(kind, tmp_path / "s")
    file_id = new_file_id()
    with pytest.raises(ValueError):
        storage.begin_partial(file_id, 1)
    w = storage.begin_partial(file_id, 0)
    w.write(b"abc")
    _result(w.keep())
    with pytest.raises(ValueError):
        storage.begin_partial(file_id, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_abort_and_discard_leave_nothing(kind: str, tmp_path: Path) -> None:
    """An aborted partial is gone; so is a discarded one (True once)."""
    storage = _make(kind, tmp_path / "s")
    file_id = new_file_id()
    w = storage.begin_partial(file_id, 0)
    w.write(b"abc")
    _result(w.abort())
    assert _result(storage.partial_size(file_id)) is None
    w = storage.begin_partial(file_id, 0)
    w.write(b"abc")
    _result(w.keep())
    assert _result(storage.discard_partial(file_id)) is True
    assert _result(storage.discard_partial(file_id)) is False
    assert _result(storage.partial_size(file_id)) is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_write_from_zero_starts_afresh(kind: str, tmp_path: Path) -> None:
    """A plain PUT from 0 replaces what a broken upload kept."""
    storage = _make(kind, tmp_path / "s")
    file_id = new_file_id()
    w = storage.begin_partial(file_id, 0)
    w.write(b"old bytes")
    _result(w.keep())
    w = storage.begin_partial(file_id, 0)
    w.write(b"new")
    assert _result(w.keep()) == 3
    assert _result(storage.partial_sha256(file_id, 3)).hexdigest() == (
        hashlib.sha256(b"new").hexdigest()
    )


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    data=st.binary(min_size=1, max_size=4000),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=4),
    backtrack=st.integers(min_value=0, max_value=50),
)
def test_cut_anywhere_the_stored_file_is_the_bytes(
    kind: str,
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    cuts: list[int],
    backtrack: int,
) -> None:
    """Cut anywhere, resumed at or before what was kept: the file is the data."""
    storage = _make(kind, tmp_path_factory.mktemp("s") / "s")
    file_id = new_file_id()
    offset = 0
    for cut in sorted(c % len(data) for c in cuts):
        if cut <= offset:
            continue
        w = storage.begin_partial(file_id, offset)
        w.write(data[offset:cut])
        kept = _result(w.keep())
        assert kept == cut
        offset = max(0, cut - backtrack)  # the client may resend a little
    w = storage.begin_partial(file_id, offset)
    w.write(data[offset:])
    _result(w.commit(_info(file_id, data)))
    assert _stored(storage, file_id) == data
