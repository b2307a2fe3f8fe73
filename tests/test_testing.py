"""The in-memory harness itself: the wire, its flow control, and MemoryStorage."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.web.client import RequestTransmissionFailed

from httpupload.errors import DuplicateFile, NoSpace
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.storage import FileInfo
from httpupload.storage.memory import MemoryStorage
from httpupload.testing import (
    START,
    Harness,
    SlowBody,
    make_config,
    make_harness,
    result_of,
    stored_file,
)


def info(file_id: str = "f" * 22, data: bytes = b"hello") -> FileInfo:
    return FileInfo(file_id, "a.txt", len(data), "text/plain", "0" * 64, START)


@pytest.fixture
def h() -> Harness:
    return make_harness()


def test_put_then_get_round_trip(h: Harness) -> None:
    """A PUT through the in-memory client is stored (201) and a GET serves it back."""
    slot = h.mint("a.txt", 5, "text/plain")
    put = h.request("PUT", slot.url, data=b"hello", headers=slot.headers)
    assert put.code == 201, put.body
    got = h.request("GET", slot.url)
    assert (got.code, got.body) == (200, b"hello")
    assert got.header("Content-Type") == "text/plain"
    assert slot.slot.file_id in h.storage.files


def test_raw_bytes_in_raw_bytes_out(h: Harness) -> None:
    """The raw mode writes exact request bytes and keeps exact response bytes."""
    conn = h.send(
        b"GET /x HTTP/1.1\r\nHost: x\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert conn.status == 404
    assert conn.received.count(b"HTTP/1.1 404 ") == 2
    assert not conn.closed
    conn.close()
    assert conn.closed


def test_memory_storage_shows_nothing_before_commit() -> None:
    """Bytes written to MemoryStorage are invisible until commit, then there."""
    storage = MemoryStorage()
    pending = storage.begin_write("f" * 22)
    assert pending.write(b"hello") is None
    assert result_of(storage.stat("f" * 22)) is None
    assert result_of(storage.open_read("f" * 22)) is None
    assert result_of(storage.list_ids()) == set()
    result_of(pending.commit(info()))
    assert result_of(storage.stat("f" * 22)) == info()
    assert result_of(storage.list_ids()) == {"f" * 22}


def test_memory_storage_refuses_a_second_commit() -> None:
    """A second upload of one file id fails with DuplicateFile and keeps the first."""
    storage = MemoryStorage()
    result_of(stored_file(storage, data=b"first", file_id="f" * 22))
    second = storage.begin_write("f" * 22)
    second.write(b"other")
    with pytest.raises(DuplicateFile):
        result_of(second.commit(info(data=b"other")))
    assert storage.files["f" * 22][1] == b"first"


def test_memory_storage_abort_twice_and_delete() -> None:
    """Abort is safe twice and leaves nothing; delete says whether a file was there."""
    storage = MemoryStorage(room=10)
    pending = storage.begin_write("f" * 22)
    pending.write(b"hello")
    result_of(pending.abort())
    result_of(pending.abort())
    assert storage.pending == set() and storage.files == {}
    assert result_of(storage.free_space()) == 10
    result_of(stored_file(storage, data=b"hello", file_id="f" * 22))
    assert result_of(storage.free_space()) == 5
    assert result_of(storage.delete("f" * 22)) is True
    assert result_of(storage.delete("f" * 22)) is False


def test_memory_storage_full_fails_commit() -> None:
    """Past its room, a commit fails with NoSpace, as a full disk does."""
    storage = MemoryStorage(room=3)
    pending = storage.begin_write("f" * 22)
    pending.write(b"hello")
    with pytest.raises(NoSpace):
        result_of(pending.commit(info()))
    assert storage.files == {}


def test_storage_behind_stops_reading_the_body(h: Harness) -> None:
    """While storage is behind, the site stops reading; the rest waits on the wire."""
    size = 1024 * 1024
    slot = h.mint("big.bin", size)
    h.storage.behind = True
    body = SlowBody(size)
    d = h.start_request("PUT", slot.url, data=body, headers=slot.headers)
    body.write(b"x" * size)
    body.finish()
    h.flush()
    (server_io,) = [p.serverIO for p in h.pumps]
    assert not server_io.reading
    (upload,) = h.storage.pending
    assert upload.size < size
    # The client's bytes pile up and its body producer is paused.
    assert body.paused
    h.storage.catch_up()
    h.flush()
    assert result_of(d).code == 201
    assert h.storage.files[slot.slot.file_id][1] == b"x" * size


def test_a_client_that_stops_reading_pauses_the_download(h: Harness) -> None:
    """A download to a client that stops reading pauses, then is cut when idle."""
    h.store(b"z" * (1024 * 1024), "big.bin")
    _, path = h.store(b"z" * (1024 * 1024), "big2.bin")
    conn = h.connect()
    conn.pause_reading()
    conn.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.received == b""
    assert conn.pump.serverIO.pending() < 2 * 64 * 1024 + 4096
    assert not conn.closed
    h.advance(61)
    assert conn.closed
    assert conn.pump.serverIO.lost is not None
    assert conn.pump.serverIO.lost.check(ConnectionAborted)


def test_a_client_that_reads_again_gets_the_whole_file(h: Harness) -> None:
    """A paused download resumes when the client reads again and ends whole."""
    data = bytes(range(256)) * 4096
    _, path = h.store(data, "big.bin")
    conn = h.connect()
    conn.pause_reading()
    conn.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    h.advance(30)
    conn.resume_reading()
    assert conn.status == 200
    assert conn.body == data


def test_idle_connection_closed_by_the_clock(h: Harness) -> None:
    """A connection that sends nothing is closed when the clock passes the timeout."""
    conn = h.connect()
    h.advance(59)
    assert not conn.closed
    h.advance(2)
    assert conn.closed


def test_make_config_overrides_and_defaults() -> None:
    """make_config merges overrides into a valid file and keeps the real defaults."""
    config = make_config(http={"idle_timeout": 5}, limits={"max_file_size": 10})
    assert config.http.idle_timeout == 5
    assert config.limits.max_file_size == 10
    assert config.http.header_timeout == 30
    h = make_harness(config)
    assert h.site.timeOut == 5


def test_round_trip_with_records() -> None:
    """A granted slot's record is reserved; its PUT completes it; a mint has none."""
    records = MemoryMetadataStore()
    h = make_harness(metadata=records)
    assert result_of(records.get(h.mint().slot.file_id)) is None
    slot = h.grant("a.txt", 5, "text/plain")
    record = result_of(records.get(slot.slot.file_id))
    assert record is not None and not record.completed
    put = h.request("PUT", slot.url, data=b"hello", headers=slot.headers)
    assert put.code == 201, put.body
    record = result_of(records.get(slot.slot.file_id))
    assert record is not None and record.completed
    assert h.request("GET", slot.url).body == b"hello"


def test_stored_file_is_served_while_its_record_lasts() -> None:
    """stored_file writes the file and its complete record; its expiry is honoured."""
    h = make_harness(metadata=MemoryMetadataStore())
    _, path = h.store(b"kept", "k.txt", expires=START + 60)
    assert h.request("GET", path).body == b"kept"
    h.advance(61)
    assert h.request("GET", path).code == 404


def test_a_slow_body_through_the_client_is_cut_off_by_the_clock() -> None:
    """A body sent piece by piece below the rate floor is cut off by the clock."""
    h = make_harness(http={"idle_timeout": 10, "min_upload_rate": 1000})
    slot = h.mint("slow.bin", 100_000)
    body = SlowBody(100_000)
    d = h.start_request("PUT", slot.url, data=body, headers=slot.headers)
    for _ in range(9):
        body.write(b"x" * 100)
        h.advance(1)
    assert not d.called
    h.advance(1.5)
    failure = h.failure_of(d)
    assert isinstance(failure.value, RequestTransmissionFailed)
    assert failure.value.reasons[0].check(ConnectionLost)
    assert h.pumps == [] and h.storage.pending == set()
