"""What the site does with work nobody can use once the client has gone.

A PUT whose body arrived whole is committed and recorded even if its client
leaves before the answer (that is how an upload lands while its client saw
an error); a PUT whose body stopped short is thrown away; a download's
record lookup and file opening are cancelled (a file opened after that is
closed at once); and a failure met after the client left is logged, never
dropped and never an "Unhandled error in Deferred".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar, cast

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher

from httpupload.metadata import FileRecord
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.storage import FileInfo, StoredFile
from httpupload.storage.memory import MemoryPartialUpload, MemoryStorage, MemoryUpload
from httpupload.testing import Harness, Minted, make_harness, result_of

_Upload = TypeVar("_Upload", bound=MemoryUpload)


class HeldStorage(MemoryStorage):
    """Memory storage whose commits and opens wait until a test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.commit_gate: Deferred[None] | None = None
        self.open_gate: Deferred[None] | None = None
        self.opened: list[StoredFile] = []
        self.closed_files: list[StoredFile] = []

    def begin_write(self, file_id: str) -> MemoryUpload:
        return self._held(super().begin_write(file_id))

    def begin_partial(self, file_id: str, offset: int) -> MemoryPartialUpload:
        return self._held(super().begin_partial(file_id, offset))

    def _held(self, upload: _Upload) -> _Upload:
        commit = upload.commit

        def held_commit(info: FileInfo) -> Deferred[None]:
            if self.commit_gate is None:
                return commit(info)
            return self.commit_gate.addCallback(lambda _: commit(info))

        upload.commit = held_commit  # type: ignore[method-assign]
        return upload

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        opening = super().open_read(file_id)

        def watch(opened: StoredFile | None) -> StoredFile | None:
            if opened is not None:
                self.opened.append(opened)
                close = opened.close

                def closing() -> None:
                    self.closed_files.append(opened)
                    close()

                opened.close = closing  # type: ignore[method-assign]
            return opened

        opening.addCallback(watch)
        if self.open_gate is None:
            return opening
        gate = self.open_gate
        return gate.addCallback(lambda _: opening)


class HeldRecords(MemoryMetadataStore):
    """A memory metadata store whose lookups can be held, and seen cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_gets = False
        self.gets: list[Deferred[FileRecord | None]] = []

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        if not self.hold_gets:
            return super().get(file_id)
        waiting: Deferred[FileRecord | None] = Deferred()
        self.gets.append(waiting)
        return waiting


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def harness() -> Harness:
    h = make_harness(
        storage=HeldStorage(), metadata=HeldRecords(), http={"min_upload_rate": 0}
    )
    return h


def granted(h: Harness, size: int = 5) -> Minted:
    """A slot with its record, as the XMPP side grants it."""
    slot = h.mint("a.txt", size)
    s = slot.slot
    record = FileRecord(
        file_id=s.file_id,
        owner=s.owner,
        filename=s.filename,
        size=s.size,
        content_type=s.content_type,
        purpose="message",
        created=h.clock.seconds(),
        slot_expires=s.expires,
        expires=None,
    )
    assert h.metadata is not None
    result_of(h.metadata.reserve(record, 86400, lambda usage: None))
    return slot


def put_head(slot: Minted, length: int) -> bytes:
    return (
        f"PUT {slot.path} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {slot.token}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def record_of(h: Harness, slot: Minted) -> FileRecord | None:
    assert h.metadata is not None
    found: FileRecord | None = result_of(h.metadata.get(slot.slot.file_id))
    return found


def failures(events: list[LogEvent]) -> list[LogEvent]:
    return [e for e in events if "log_failure" in e]


def test_a_whole_body_is_stored_and_recorded_after_its_client_left(
    logged: list[LogEvent],
) -> None:
    """The client leaves while a complete body is being committed: the file is
    stored and its record completed all the same, with nothing logged as failed."""
    h = harness()
    storage: Any = h.storage
    storage.commit_gate = Deferred()
    slot = granted(h)
    conn = h.send(put_head(slot, 5) + b"hello")
    assert conn.status == 0  # the commit is held: no answer yet
    conn.abort()
    assert slot.slot.file_id not in storage.files
    storage.commit_gate.callback(None)
    h.flush()
    assert storage.files[slot.slot.file_id][1] == b"hello"
    record = record_of(h, slot)
    assert record is not None and record.completed
    assert storage.aborted == 0
    assert h.receiver.in_flight == 0
    assert failures(logged) == []


def test_a_body_cut_short_is_kept_to_resume_when_its_client_leaves() -> None:
    """The client leaves midway through the body: what arrived is kept as the
    slot's partial upload (#12), nothing is stored or served, the record stays
    incomplete and its PUT URL valid for the partial upload's lifetime."""
    h = harness()
    storage: Any = h.storage
    slot = granted(h, size=10)
    conn = h.send(put_head(slot, 10) + b"hello")
    assert len(storage.pending) == 1
    conn.abort()
    assert storage.pending == set()
    assert storage.aborted == 0
    assert storage.files == {}
    assert bytes(storage.partials[slot.slot.file_id]) == b"hello"
    record = record_of(h, slot)
    assert record is not None and not record.completed
    lifetime = h.receiver.partial_lifetime
    assert record.slot_expires == h.clock.seconds() + lifetime
    assert h.receiver.in_flight == 0


def test_an_admission_lookup_is_cancelled_when_its_client_leaves() -> None:
    """A PUT still waiting for its record when the client leaves: the lookup is
    cancelled and no write to storage is begun."""
    h = harness()
    storage: Any = h.storage
    records: Any = h.metadata
    slot = granted(h, size=10)
    records.hold_gets = True
    conn = h.send(put_head(slot, 10) + b"hel")
    [lookup] = records.gets
    conn.abort()
    assert lookup.called  # cancelled
    assert storage.pending == set()
    assert h.receiver.in_flight == 0


def test_a_download_being_opened_is_cancelled_and_closed_when_its_client_leaves(
    logged: list[LogEvent],
) -> None:
    """The client of a GET leaves while storage is opening the file: the wait
    stops at once, the file is closed as soon as it is open, nothing is sent."""
    h = harness()
    storage: Any = h.storage
    _, path = h.store(b"hello", "a.txt")
    storage.open_gate = Deferred()
    conn = h.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert conn.status == 0
    conn.abort()
    storage.open_gate.callback(None)
    h.flush()
    assert len(storage.opened) == 1
    assert storage.closed_files == storage.opened
    assert failures(logged) == []


def test_a_record_lookup_of_a_download_is_cancelled_when_its_client_leaves() -> None:
    """The client of a GET leaves while the file's record is looked up: the
    lookup is cancelled and the file opened meanwhile is closed."""
    h = harness()
    storage: Any = h.storage
    records: Any = h.metadata
    _, path = h.store(b"hello", "a.txt")
    records.hold_gets = True
    conn = h.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    [lookup] = records.gets
    conn.abort()
    assert lookup.called  # cancelled
    assert len(storage.opened) == 1
    assert storage.closed_files == storage.opened


def test_a_failure_after_the_client_left_is_logged(logged: list[LogEvent]) -> None:
    """A commit that fails after its client left has nobody to answer: it is
    logged, not dropped."""
    h = harness()
    storage: Any = h.storage
    storage.commit_gate = Deferred()
    slot = granted(h)
    conn = h.send(put_head(slot, 5) + b"hello")
    conn.abort()
    storage.commit_gate.errback(RuntimeError("disk on fire"))
    h.flush()
    assert slot.slot.file_id not in storage.files
    [failure] = failures(logged)
    assert failure["log_failure"].check(RuntimeError)


def test_a_download_answered_in_full_is_not_cancelled() -> None:
    """A GET whose client stays gets its file; the cancellation hook is idle."""
    h = harness()
    _, path = h.store(b"hello", "a.txt")
    conn = h.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert conn.status == 200
    assert conn.body == b"hello"
    storage: Any = h.storage
    assert storage.closed_files == []
