"""What every ``Storage`` must do: the memory, filesystem and S3 backends alike.

One suite, parametrised over the backends: nothing is visible before
``commit``, a second commit of an id is a ``DuplicateFile`` and changes
nothing, ``abort`` leaves nothing, a missing id is None everywhere,
``delete`` is true once, ``list_ids`` lists what is stored, ``send`` gives
exactly the range asked for at the reader's pace, and ``start``/``close``
fire.  What only one backend does (the filesystem's layout, S3's multipart
uploads) is tested in ``test_storage.py`` and ``test_storage_s3.py``.

The memory and filesystem backends need no reactor (the filesystem's
"threads" run inline); S3 runs against a real SeaweedFS (``s3server``),
the one case with sockets.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
from storage_fakes import Reader, inline_filesystem

from httpupload.errors import DuplicateFile, StorageError
from httpupload.slots import new_file_id
from httpupload.storage import FileInfo, Storage
from httpupload.storage.memory import MemoryStorage

_prefixes = itertools.count(1)


@dataclass
class Backend:
    """A storage under test, and how to see what it has left half-done."""

    storage: Storage
    # Uploads begun and not yet gone (partial files, multipart uploads).
    partials: Callable[[], Awaitable[int]]
    # Bytes a push producer may still write after being paused: what its
    # source had read already (an S3 response's last socket read).
    late_allowed: int = 0


def _memory(_: pytest.FixtureRequest, __: Path) -> Iterator[Backend]:
    storage = MemoryStorage()

    async def partials() -> int:
        return len(storage.pending)

    yield Backend(storage, partials)


def _filesystem(_: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    storage, _reactor = inline_filesystem(tmp_path / "store")

    async def partials() -> int:
        return len(list((storage.root / "tmp").iterdir()))

    yield Backend(storage, partials)


def _s3(request: pytest.FixtureRequest, _: Path) -> Iterator[Backend]:
    from twisted.internet import reactor

    from httpupload.config_s3 import MiB, S3Settings
    from httpupload.storage.s3 import S3Storage

    seaweedfs = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("contract_bucket")
    settings = S3Settings(
        bucket=bucket,
        prefix=f"contract{next(_prefixes)}/",
        endpoint=seaweedfs.endpoint,
        access_key_id=seaweedfs.access_key,
        secret_access_key=seaweedfs.secret_key,
        part_size=5 * MiB,
    )
    storage = S3Storage(settings, reactor)
    pytest_twisted.blockon(storage.start())

    async def partials() -> int:
        return len(await storage.client.multipart_uploads(settings.prefix))

    # Twisted's TCP reads take 64 KiB at a time.
    yield Backend(storage, partials, late_allowed=256 * 1024)
    pytest_twisted.blockon(storage.close())


_MAKERS = {"memory": _memory, "filesystem": _filesystem, "s3": _s3}


@pytest.fixture(scope="module")
def contract_bucket(seaweedfs: object) -> str:
    """One bucket for the module's S3 cases (each storage has its own prefix)."""
    make_bucket: Callable[[], str] = seaweedfs.make_bucket  # type: ignore[attr-defined]
    return make_bucket()


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("filesystem"),
        pytest.param("s3", marks=pytest.mark.enable_socket),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, fresh and started, holding no file."""
    yield from _MAKERS[request.param](request, tmp_path)


def info_for(file_id: str, data: bytes, filename: str = "naïve café.txt") -> FileInfo:
    return FileInfo(
        file_id=file_id,
        filename=filename,
        size=len(data),
        content_type="text/plain; charset=utf-8",
        sha256=hashlib.sha256(data).hexdigest(),
        created=1700000000.25,
    )


async def store(storage: Storage, data: bytes, chunk: int = 64 * 1024) -> FileInfo:
    """Write and commit ``data`` under a new id, honouring ``write``'s Deferreds."""
    file_id = new_file_id()
    pending = storage.begin_write(file_id)
    for start in range(0, len(data), chunk):
        waiting = pending.write(data[start : start + chunk])
        if waiting is not None:
            await waiting
    info = info_for(file_id, data)
    await pending.commit(info)
    return info


async def read(storage: Storage, file_id: str, offset: int, length: int) -> bytes:
    """What ``send`` of that range writes into a sink that reads it all."""
    opened = await storage.open_read(file_id)
    assert opened is not None
    reader = Reader()
    opened.send(reader, offset, length)
    data = await reader.read_all()
    assert reader.finished == 1 and not reader.cut
    return data


@pytest_twisted.ensureDeferred
async def test_nothing_is_visible_before_commit(backend: Backend) -> None:
    """A write in progress is not stat'ed, opened or listed; once committed it is."""
    storage = backend.storage
    file_id = new_file_id()
    pending = storage.begin_write(file_id)
    pending.write(b"hello ")
    assert await storage.stat(file_id) is None
    assert await storage.open_read(file_id) is None
    assert file_id not in await storage.list_ids()
    pending.write(b"world")
    await pending.commit(info_for(file_id, b"hello world"))
    assert await storage.stat(file_id) == info_for(file_id, b"hello world")
    assert await storage.list_ids() == {file_id}
    assert await read(storage, file_id, 0, 11) == b"hello world"
    assert await backend.partials() == 0


@pytest_twisted.ensureDeferred
async def test_a_second_commit_of_an_id_is_a_duplicate_and_changes_nothing(
    backend: Backend,
) -> None:
    """Of two writes to one id the second commit is a DuplicateFile; the first stays."""
    storage = backend.storage
    file_id = new_file_id()
    first, second = storage.begin_write(file_id), storage.begin_write(file_id)
    first.write(b"first")
    second.write(b"other")
    await first.commit(info_for(file_id, b"first"))
    with pytest.raises(DuplicateFile):
        await second.commit(info_for(file_id, b"other"))
    assert await storage.stat(file_id) == info_for(file_id, b"first")
    assert await read(storage, file_id, 0, 5) == b"first"
    assert await backend.partials() == 0


@pytest_twisted.ensureDeferred
async def test_abort_leaves_nothing(backend: Backend) -> None:
    """An aborted write (aborted twice) leaves no file, no partial; the id is free."""
    storage = backend.storage
    file_id = new_file_id()
    pending = storage.begin_write(file_id)
    pending.write(b"partial")
    await pending.abort()
    await pending.abort()
    assert await storage.stat(file_id) is None
    assert await storage.open_read(file_id) is None
    assert await storage.list_ids() == set()
    assert await backend.partials() == 0
    again = storage.begin_write(file_id)
    again.write(b"whole")
    await again.commit(info_for(file_id, b"whole"))
    assert await storage.stat(file_id) == info_for(file_id, b"whole")


@pytest_twisted.ensureDeferred
async def test_a_missing_id_is_none_everywhere(backend: Backend) -> None:
    """An id never stored has no info, opens as None and deletes as False."""
    storage = backend.storage
    file_id = new_file_id()
    assert await storage.stat(file_id) is None
    assert await storage.open_read(file_id) is None
    assert await storage.delete(file_id) is False


@pytest_twisted.ensureDeferred
async def test_ids_outside_the_alphabet_are_refused(backend: Backend) -> None:
    """An id that could name another path or key is never written, found or deleted."""
    storage = backend.storage
    for bad in ("..", "../../etc", "a/b", "", "x" * 200):
        assert await storage.stat(bad) is None
        assert await storage.open_read(bad) is None
        assert await storage.delete(bad) is False
        with pytest.raises(ValueError):
            storage.begin_write(bad)


@pytest_twisted.ensureDeferred
async def test_delete_is_true_once(backend: Backend) -> None:
    """Deleting a stored file says True and it is gone; deleting again says False."""
    storage = backend.storage
    info = await store(storage, b"x")
    assert await storage.delete(info.file_id) is True
    assert await storage.stat(info.file_id) is None
    assert await storage.open_read(info.file_id) is None
    assert await storage.list_ids() == set()
    assert await storage.delete(info.file_id) is False


@pytest_twisted.ensureDeferred
async def test_list_ids_lists_every_stored_file(backend: Backend) -> None:
    """``list_ids`` is exactly the ids committed and not deleted."""
    storage = backend.storage
    stored = [await store(storage, bytes([n]) * (n + 1)) for n in range(3)]
    await storage.delete(stored[1].file_id)
    assert await storage.list_ids() == {stored[0].file_id, stored[2].file_id}


@pytest_twisted.ensureDeferred
async def test_send_gives_exactly_the_range_asked_for(backend: Backend) -> None:
    """Whole, a middle part, the last byte, none: ``send`` writes that, then ends."""
    storage = backend.storage
    data = os.urandom(300 * 1024 + 7)
    info = await store(storage, data)
    for offset, length in (
        (0, len(data)),
        (1000, 2000),
        (len(data) - 1, 1),
        (5, 0),
    ):
        got = await read(storage, info.file_id, offset, length)
        assert got == data[offset : offset + length], (offset, length)


@pytest_twisted.ensureDeferred
async def test_send_follows_the_readers_pace(backend: Backend) -> None:
    """A reader taking 64 KiB at a time gets every byte, never far ahead of it."""
    storage = backend.storage
    data = os.urandom(3 * 1024 * 1024 + 11)
    info = await store(storage, data, chunk=1024 * 1024)
    opened = await storage.open_read(info.file_id)
    assert opened is not None
    reader = Reader(window=64 * 1024)
    peak = 0
    opened.send(reader, 0, len(data))
    while not reader.done:
        await reader.wait()
        peak = max(peak, reader.unread)
        if not reader.done:
            reader.take()
    assert bytes(reader.received) == data
    assert reader.finished == 1 and not reader.cut
    # Ahead by at most one chunk of the sender's (256 KiB: the filesystem's
    # reads), and what a paused source had in flight.
    assert peak <= reader.window + 256 * 1024 + backend.late_allowed
    if reader.streaming:
        assert reader.pauses > 1
        assert reader.late <= backend.late_allowed


@pytest_twisted.ensureDeferred
async def test_a_file_closed_unsent_can_be_opened_again(backend: Backend) -> None:
    """``close`` without ``send`` releases the file; it opens and sends again."""
    storage = backend.storage
    info = await store(storage, b"kept")
    opened = await storage.open_read(info.file_id)
    assert opened is not None and opened.info == info
    opened.close()
    opened.close()
    assert await read(storage, info.file_id, 0, 4) == b"kept"


@pytest_twisted.ensureDeferred
async def test_start_and_close_fire(backend: Backend) -> None:
    """``start`` (again: it is started already) and ``close`` both fire."""
    storage = backend.storage
    await storage.start()
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_free_space_is_a_count_or_unknown(backend: Backend) -> None:
    """``free_space`` is bytes still free (never negative), or None if unknown."""
    free = await backend.storage.free_space()
    assert free is None or free >= 0


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_is_a_storage_error(backend: Backend) -> None:
    """What a commit fails with is a StorageError (here, for an id already stored)."""
    storage = backend.storage
    info = await store(storage, b"once")
    pending = storage.begin_write(info.file_id)
    pending.write(b"twice")
    with pytest.raises(StorageError):
        await pending.commit(info_for(info.file_id, b"twice"))
