"""One upload in flight per slot, and a used slot is never written again.

A new PUT of a slot (a phone retrying while the server still holds its dead
connection) cuts off the older one and waits until its partial file is gone,
on one node (the receiver's registry) and across nodes (an S3 multipart
upload aborts the key's older ones).  A PUT whose record is already complete
is refused before any byte reaches storage, whatever the store does with the
create-only commit.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from s3server import SeaweedFS, seaweedfs  # noqa: F401
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.web.http_headers import Headers

from httpupload.config_s3 import MiB, S3Settings
from httpupload.errors import (
    AlreadyStored,
    InvalidSlot,
    StorageFailed,
    StorageUnavailable,
)
from httpupload.metadata import FileRecord
from httpupload.slots import Slot, SlotSigner, new_file_id
from httpupload.storage import FileInfo, StoredFile
from httpupload.storage.memory import MemoryStorage
from httpupload.storage.s3 import S3Storage
from httpupload.storage.s3.wire import query_string, xml_children
from httpupload.testing import Connection, Wire, make_harness
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

reactor: Any = _reactor
OWNER = "romeo@montague.tld"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def put_head(slot_path: str, length: int, token: str) -> bytes:
    return (
        f"PUT /{slot_path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


# -- one node ------------------------------------------------------------------


def test_six_puts_of_one_slot_leave_one_partial_file() -> None:
    """Each new PUT cuts off the one before, whose bytes are kept until the new
    one starts the slot's partial upload afresh: at no time is there more than
    one partial upload, and the last PUT gets its 201."""
    h = make_harness(http={"min_upload_rate": 0})
    storage: MemoryStorage = h.storage
    size = 5 * MiB
    half = size // 2
    slot, token = h.signer.mint("big.bin", size, None, OWNER, lifetime=300)
    bodies = [os.urandom(size) for _ in range(6)]
    conns: list[Connection] = []
    seen: set[int] = set()
    for body in bodies:
        conns.append(h.send(put_head(slot.path, size, token) + body[:half]))
        # This PUT's half has arrived in a partial file of its own.
        partials = list(storage.pending)
        assert len(partials) == 1, "two partial files for one slot, or none"
        assert id(partials[0]) not in seen
        assert partials[0].size >= half - 65536
        seen.add(id(partials[0]))
    assert all(older.closed for older in conns[:-1])
    last = conns[-1].write(bodies[-1][half:])
    assert last.status == 201, last.received[:200]
    answer = h.request("GET", h.base + slot.path)
    assert answer.code == 200
    assert answer.body == bodies[-1]
    assert storage.pending == set()
    assert storage.partials == {}
    assert storage.aborted == 0  # kept, then started afresh: never two
    assert h.receiver.in_flight == 0


# -- storage and records that promise less -------------------------------------


class Overwriting:
    """An in-memory ``Storage`` whose commit ignores the create-only rule,
    as an object store that ignores ``If-None-Match: *`` does."""

    def __init__(self, commit_gate: Deferred[None] | None = None) -> None:
        self.files: dict[str, tuple[FileInfo, bytes]] = {}
        self.begun: list[str] = []
        self.bytes_written = 0
        self.commit_gate = commit_gate

    def start(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def begin_write(self, file_id: str) -> Any:
        self.begun.append(file_id)
        storage, chunks = self, []

        class Pending:
            def write(self, data: bytes) -> None:
                storage.bytes_written += len(data)
                chunks.append(data)

            def commit(self, info: FileInfo) -> Deferred[None]:
                def store(_: object) -> None:
                    storage.files[file_id] = (info, b"".join(chunks))

                gate, storage.commit_gate = storage.commit_gate, None
                return (gate or succeed(None)).addCallback(store)

            def abort(self) -> Deferred[None]:
                chunks.clear()
                return succeed(None)

        return Pending()

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        return succeed(None)

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        found = self.files.get(file_id)
        return succeed(found[0] if found else None)

    def delete(self, file_id: str) -> Deferred[bool]:
        return succeed(self.files.pop(file_id, None) is not None)

    def list_ids(self) -> Deferred[set[str]]:
        return succeed(set(self.files))

    def free_space(self) -> Deferred[int | None]:
        return succeed(None)


class Records:
    """The two calls the receiver makes of a metadata store, in memory."""

    def __init__(self) -> None:
        self.records: dict[str, FileRecord] = {}
        self.down = False

    def add(self, slot: Slot) -> None:
        self.records[slot.file_id] = FileRecord(
            slot.file_id,
            slot.owner,
            slot.filename,
            slot.size,
            slot.content_type,
            "message",
            0.0,
            slot.expires,
            None,
        )

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        if self.down:
            return fail(RuntimeError("the metadata store is down"))
        return succeed(self.records.get(file_id))

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        record = self.records.get(file_id)
        if record is None:
            return succeed(None)
        done = FileRecord(**{**record.__dict__, "completed": True, "sha256": sha256})
        self.records[file_id] = done
        return succeed(done)


class Receiving:
    """An UploadReceiver over fakes, driven as UploadRequest drives it."""

    def __init__(self, storage: Overwriting, records: Records | None) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1_700_000_000)
        self.signer = SlotSigner(b"k" * 32, self.clock)
        self.storage = storage
        self.records = records
        self.receiver = UploadReceiver(
            self.signer,
            storage,
            self.clock,
            metadata=records,  # type: ignore[arg-type]
        )

    def slot(self, size: int = 5) -> tuple[Slot, str]:
        slot, token = self.signer.mint("a.txt", size, None, OWNER, lifetime=300)
        if self.records is not None:
            self.records.add(slot)
        return slot, token

    def start(self, slot: Slot, token: str) -> Any:
        headers = Headers(
            {"Authorization": [f"Bearer {token}"], "Content-Length": [str(slot.size)]}
        )
        return self.receiver.start(
            f"/{slot.path}".encode(), headers, slot.size, "127.0.0.1"
        )


def result_of(d: Deferred[Any]) -> Any:
    """What a Deferred that has fired holds (a Failure, if it failed)."""
    found: list[Any] = []
    d.addBoth(found.append)
    assert found, "not fired"
    return found[0]


def test_a_completed_record_refuses_the_put_before_any_byte_is_stored() -> None:
    """The store would let a second PUT replace the file; the record stops it
    first: 409, storage never asked to write, the stored bytes unchanged."""
    world = Receiving(Overwriting(), Records())
    slot, token = world.slot()
    first = world.start(slot, token)
    first.write(b"first")
    assert result_of(first.finish()).sha256
    written = world.storage.bytes_written
    second = world.start(slot, token)
    second.write(b"other")
    refused = result_of(second.finish())
    assert refused.check(AlreadyStored)
    assert world.storage.begun == [slot.file_id]
    assert world.storage.bytes_written == written
    assert world.storage.files[slot.file_id][1] == b"first"


def test_a_withdrawn_slot_is_refused_before_any_byte_is_stored() -> None:
    """A slot whose record is gone gets 403 without storage seeing its body."""
    world = Receiving(Overwriting(), Records())
    slot, token = world.slot()
    del world.records.records[slot.file_id]  # type: ignore[union-attr]
    upload = world.start(slot, token)
    upload.write(b"hello")
    assert result_of(upload.finish()).check(InvalidSlot)
    assert world.storage.begun == []


def test_records_out_of_reach_refuse_with_503_and_store_nothing() -> None:
    """If the record cannot be looked up, nothing is stored: 503, try again."""
    records = Records()
    world = Receiving(Overwriting(), records)
    slot, token = world.slot()
    records.down = True
    upload = world.start(slot, token)
    upload.write(b"hello")
    assert result_of(upload.finish()).check(StorageUnavailable)
    assert world.storage.begun == []


def test_body_waits_for_the_lookup_and_is_held_back() -> None:
    """Until the record is looked up the body is held (write asks to wait),
    then written whole to storage; the PUT completes."""
    records = Records()
    world = Receiving(Overwriting(), records)
    slot, token = world.slot()
    looked_up: Deferred[FileRecord | None] = Deferred()
    records.get = lambda file_id: looked_up  # type: ignore[method-assign]
    upload = world.start(slot, token)
    wait = upload.write(b"hel")
    assert isinstance(wait, Deferred) and not wait.called
    assert world.storage.begun == []
    looked_up.callback(records.records[slot.file_id])
    assert wait.called
    assert upload.write(b"lo") is None
    result_of(upload.finish())
    assert world.storage.files[slot.file_id][1] == b"hello"


def test_a_put_while_the_first_commits_waits_for_it_then_conflicts() -> None:
    """A PUT arriving while the first one's whole body is being committed does
    not cut it off: it waits, and once the first is stored gets 409, having
    written nothing (no metadata store at all: the receiver knows)."""
    gate: Deferred[None] = Deferred()
    world = Receiving(Overwriting(gate), None)
    slot, token = world.slot()
    first = world.start(slot, token)
    first.write(b"first")
    committing = first.finish()
    cut: list[bool] = []
    first.cancel = lambda: cut.append(True)
    second = world.start(slot, token)
    assert not cut
    assert isinstance(second.write(b"other"), Deferred)
    gate.callback(None)
    assert not isinstance(result_of(committing), Exception)
    assert result_of(second.finish()).check(AlreadyStored)
    assert world.storage.begun == [slot.file_id]
    assert world.storage.files[slot.file_id][1] == b"first"


def test_a_new_put_cuts_off_the_one_in_flight() -> None:
    """The older PUT still receiving is cut off and thrown away; the newer one
    is stored; the older one's answer, if any, is not a 201."""
    world = Receiving(Overwriting(), Records())
    slot, token = world.slot()
    older = world.start(slot, token)
    older.write(b"ol")
    cut: list[bool] = []
    older.cancel = lambda: cut.append(True)
    newer = world.start(slot, token)
    assert cut == [True]
    assert older.aborted
    newer.write(b"hello")
    result_of(newer.finish())
    assert world.storage.files[slot.file_id][1] == b"hello"
    assert world.storage.begun == [slot.file_id, slot.file_id]


def test_slots_in_flight_are_named_until_their_upload_is_over() -> None:
    """The receiver names the slots still arriving (the sweep holds their
    records), and forgets one once its answer is out."""
    world = Receiving(Overwriting(), Records())
    slot, token = world.slot()
    upload = world.start(slot, token)
    upload.write(b"he")
    assert world.receiver.slot_ids() == [slot.file_id]
    upload.write(b"llo")
    result_of(upload.finish())
    upload.release()
    assert world.receiver.slot_ids() == []


def test_a_used_slot_is_409_over_http_on_a_store_that_would_overwrite() -> None:
    """End to end: the second PUT of a used slot is 409 and the file unchanged."""
    world = Receiving(Overwriting(), Records())
    site = UploadSite(world.receiver, world.storage, world.clock)
    wire = Wire(site, world.clock)
    slot, token = world.slot()
    codes = [
        wire.request(
            "PUT",
            "/" + slot.path,
            data=body,
            headers={"Authorization": f"Bearer {token}"},
        ).code
        for body in (b"first", b"other")
    ]
    assert codes == [201, 409]
    assert world.storage.files[slot.file_id][1] == b"first"


# -- across nodes: S3 proxy mode ------------------------------------------------


@pytest.fixture
def make_node(seaweedfs: SeaweedFS) -> Any:  # noqa: F811
    """Nodes sharing one bucket and prefix, each with its own S3Storage."""
    bucket = seaweedfs.make_bucket()
    made: list[S3Storage] = []

    async def make() -> S3Storage:
        settings = S3Settings(
            bucket=bucket,
            prefix="shared/",
            endpoint=seaweedfs.endpoint,
            access_key_id=seaweedfs.access_key,
            secret_access_key=seaweedfs.secret_key,
            part_size=5 * MiB,
            parts_in_flight=1,
        )
        storage = S3Storage(settings, reactor)
        await storage.start()
        made.append(storage)
        return storage

    yield make
    for storage in made:
        pytest_twisted.blockon(storage.close())


def info_for(file_id: str, data: bytes) -> FileInfo:
    digest = hashlib.sha256(data).hexdigest()
    return FileInfo(
        file_id, "big.bin", len(data), "application/octet-stream", digest, 1.0
    )


async def multipart_uploads(storage: S3Storage) -> list[str]:
    query = query_string({"uploads": None, "prefix": storage.settings.prefix})
    _, body = await storage.client.call("GET", "", query=query)
    return [u.findtext("UploadId") or "" for u in xml_children(body).iter("Upload")]


async def until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await condition()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not reached"
        await sleep(0.05)


async def feed(pending: Any, data: bytes, chunk: int = 256 * 1024) -> None:
    for start in range(0, len(data), chunk):
        waiting = pending.write(data[start : start + chunk])
        if waiting is not None:
            await waiting


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_a_newer_multipart_upload_on_another_node_aborts_the_older(
    make_node: Callable[[], Any],
) -> None:
    """Node B's upload of the slot aborts node A's in-progress one: A's next
    part fails and its commit is refused, B's bytes are stored, and no
    multipart upload is left behind."""
    node_a: S3Storage = await make_node()
    node_b: S3Storage = await make_node()
    file_id = new_file_id()
    size = 12 * MiB
    data_a, data_b = os.urandom(size), os.urandom(size)
    older = node_a.begin_write(file_id)
    await feed(older, data_a[: 6 * MiB])
    (a_id,) = await until(lambda: multipart_uploads(node_a))

    newer = node_b.begin_write(file_id)
    await feed(newer, data_b[: 6 * MiB])

    async def only_b() -> list[str]:
        listed = await multipart_uploads(node_b)
        return listed if len(listed) == 1 and listed[0] != a_id else []

    await until(only_b)
    await feed(older, data_a[6 * MiB :])
    with pytest.raises(StorageFailed, match="NoSuchUpload"):
        await older.commit(info_for(file_id, data_a))
    await feed(newer, data_b[6 * MiB :])
    await newer.commit(info_for(file_id, data_b))
    stat = await node_a.stat(file_id)
    assert stat is not None and stat.sha256 == info_for(file_id, data_b).sha256
    assert await multipart_uploads(node_a) == []
