"""Records and files in step: reconciliation, expiry, and 404 for expired files.

On the in-memory stores and a ``MemoryReactorClock``: every Deferred of the
stores has fired when its call returns, so each test runs to its end inside
the call (``synchronous``), and time moves only with ``clock.advance``.  The
stores' own behaviour on SQLite and PostgreSQL is the metadata contract
suite's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.web.http_headers import Headers

from httpupload.config import PurposeConfig
from httpupload.expiry import (
    DEAD_SLOT_AFTER,
    DEAD_SLOT_GRACE,
    HOLD_INTERVAL,
    HOLD_LEASE,
    Maintenance,
    reconcile,
)
from httpupload.metadata import FileRecord
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner, new_file_id
from httpupload.storage import FileInfo
from httpupload.testing import (
    START,
    Harness,
    MemoryMetadataStore,
    MemoryStorage,
    make_harness,
    result_of,
)
from httpupload.web.uploads import UploadReceiver

DAY = 86400.0
POLICY = SlotPolicy(
    10**9, ("x.org",), purposes={"message": PurposeConfig(True, 30 * 86400, 0)}
)


P = ParamSpec("P")


def synchronous(
    test: Callable[P, Coroutine[Any, Any, None]],
) -> Callable[P, None]:
    """Run an async test to its end within the call: everything it awaits
    (memory stores, the in-memory wire) has fired already."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        result_of(ensureDeferred(test(*args, **kwargs)))

    return run


@dataclass
class World:
    clock: MemoryReactorClock
    storage: MemoryStorage
    store: MemoryMetadataStore

    async def stored_file(self, data: bytes = b"data", **record: object) -> str:
        """A file uploaded through a slot, with its record completed."""
        file_id = new_file_id()
        now = self.clock.seconds()
        values: dict = dict(
            file_id=file_id,
            owner="a@x.org",
            filename="f.txt",
            size=len(data),
            content_type="text/plain",
            purpose="message",
            created=now,
            slot_expires=now + 300,
            expires=now + 30 * DAY,
        )
        values.update(record)
        await self.store.reserve(FileRecord(**values), DAY, lambda usage: None)
        await self.write(file_id, data)
        await self.store.complete(file_id, "00" * 32, "text/plain", now)
        return file_id

    async def write(self, file_id: str, data: bytes) -> None:
        upload = self.storage.begin_write(file_id)
        upload.write(data)
        await upload.commit(
            FileInfo(
                file_id,
                "f.txt",
                len(data),
                "text/plain",
                "00" * 32,
                self.clock.seconds(),
            )
        )

    def site(self) -> Harness:
        """Our own ``UploadSite`` over these stores, on this clock, in memory."""
        return make_harness(storage=self.storage, metadata=self.store, clock=self.clock)


@pytest.fixture
def world() -> World:
    """Empty memory stores on a clock at ``START``."""
    clock = MemoryReactorClock()
    clock.advance(START)
    return World(clock, MemoryStorage(), MemoryMetadataStore())


@synchronous
async def test_reconcile(world: World) -> None:
    """Adopt files without records, complete half-recorded ones, drop dead records."""
    orphan = new_file_id()
    await world.write(orphan, b"no record")
    half = new_file_id()
    now = world.clock.seconds()
    await world.store.reserve(
        FileRecord(half, "a@x.org", "f.txt", 4, None, "message", now, now + 300, None),
        DAY,
        lambda usage: None,
    )
    await world.write(half, b"half")
    gone = await world.stored_file()
    await world.storage.delete(gone)
    world.clock.advance(10)
    keep = await world.stored_file()

    assert await reconcile(world.store, world.storage, POLICY, world.clock) == (1, 1, 1)
    adopted = await world.store.get(orphan)
    assert adopted is not None and adopted.completed and adopted.owner == ""
    assert adopted.expires is not None
    assert (await world.store.get(half)).completed  # type: ignore[union-attr]
    assert await world.store.get(gone) is None
    assert (await world.store.get(keep)).completed  # type: ignore[union-attr]
    assert await reconcile(world.store, world.storage, POLICY, world.clock) == (0, 0, 0)


@synchronous
async def test_sweep_is_bounded_and_removes_files_then_records(world: World) -> None:
    """Each sweep removes at most a batch; expired files and dead slots go."""
    expired = [
        await world.stored_file(expires=world.clock.seconds() + 10) for _ in range(5)
    ]
    lasting = await world.stored_file(expires=None)
    now = world.clock.seconds()
    await world.store.reserve(
        FileRecord(
            "deadslot" * 4, "a@x.org", "f", 1, None, "message", now, now + 300, None
        ),
        DAY,
        lambda usage: None,
    )
    maintenance = Maintenance(world.store, world.storage, POLICY, world.clock, batch=2)
    world.clock.advance(11)
    assert await maintenance.sweep_once() == 2
    assert await maintenance.sweep_once() == 2
    assert await maintenance.sweep_once() == 1
    assert await maintenance.sweep_once() == 0
    for file_id in expired:
        assert await world.store.get(file_id) is None
        assert await world.storage.stat(file_id) is None
    assert await world.storage.stat(lasting) is not None
    world.clock.advance(DEAD_SLOT_AFTER + 300)
    assert await maintenance.sweep_once() == 1
    assert await world.store.all_ids() == {lasting}


@synchronous
async def test_expired_or_deleted_file_is_404_at_once(world: World) -> None:
    """Downloads check the record: expired or deleted means 404 before any sweep."""
    file_id = await world.stored_file(b"soon gone", expires=world.clock.seconds() + 60)
    other = await world.stored_file(b"deleted")
    site = world.site()
    response = site.request("GET", f"/{file_id}/f.txt")
    assert (response.code, response.body) == (200, b"soon gone")
    world.clock.advance(60)
    assert site.request("GET", f"/{file_id}/f.txt").code == 404
    await world.store.delete(other)
    assert site.request("GET", f"/{other}/f.txt").code == 404


@synchronous
async def test_put_records_the_file_and_refuses_withdrawn_slots(world: World) -> None:
    """A PUT completes its record before the 201; a slot whose record went is 403."""
    site = world.site()
    now = world.clock.seconds()
    for withdrawn in (False, True):
        slot = site.mint("a.txt", 5, owner="a@montague.tld")
        await world.store.reserve(
            FileRecord(
                slot.slot.file_id,
                "a@montague.tld",
                "a.txt",
                5,
                None,
                "message",
                now,
                slot.slot.expires,
                None,
            ),
            DAY,
            lambda usage: None,
        )
        if withdrawn:
            await world.store.delete(slot.slot.file_id)
        response = site.request("PUT", slot.url, data=b"hello", headers=slot.headers)
        record = await world.store.get(slot.slot.file_id)
        if withdrawn:
            assert response.code == 403
            assert record is None
            assert await world.storage.stat(slot.slot.file_id) is None
        else:
            assert response.code == 201
            assert record is not None and record.completed
            assert record.sha256 is not None and len(record.sha256) == 64


@synchronous
async def test_a_failed_sweep_leaves_its_claims_until_the_lease(world: World) -> None:
    """Files a sweep could not remove are claimed again only after the lease."""
    ids = [
        await world.stored_file(expires=world.clock.seconds() + 10) for _ in range(3)
    ]
    real_delete = world.storage.delete
    failing = {ids[1]}

    def delete(file_id: str) -> Deferred[bool]:
        if file_id in failing:
            return fail(OSError("storage unreachable"))
        return real_delete(file_id)

    world.storage.delete = delete  # type: ignore[method-assign]
    maintenance = Maintenance(
        world.store, world.storage, POLICY, world.clock, batch=10, lease=100
    )
    world.clock.advance(11)
    with pytest.raises(OSError, match="unreachable"):
        await maintenance.sweep_once()
    failing.clear()
    left = await world.store.all_ids()
    assert ids[1] in left and left < set(ids)
    world.clock.advance(99)
    assert await maintenance.sweep_once() == 0  # still leased to the failed sweep
    world.clock.advance(1)
    assert await maintenance.sweep_once() == len(left)
    assert await world.store.all_ids() == set()
    for file_id in ids:
        assert await world.storage.stat(file_id) is None


@synchronous
async def test_reconcile_when_another_node_adopted_first(world: World) -> None:
    """An orphan adopted by another node meanwhile is neither an error nor counted."""
    orphan = new_file_id()
    await world.write(orphan, b"no record")
    stale = await world.store.all_ids()  # what we read before the other node acted
    info = await world.storage.stat(orphan)
    assert info is not None
    await world.store.reserve(FileRecord.orphan(info, None), DAY, lambda usage: None)
    world.store.all_ids = lambda: succeed(set(stale))  # type: ignore[method-assign]
    assert await reconcile(world.store, world.storage, POLICY, world.clock) == (0, 0, 0)
    assert (await world.store.get(orphan)) is not None


@synchronous
async def test_a_store_outage_after_the_commit_loses_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording fails once after the file is stored: the client's retry of the
    same bytes gets its 201 (other bytes a 409); a slot nobody retried has its
    file removed with the dead slot, never left behind unrecorded."""
    site = world.site()
    real_complete = world.store.complete

    def store_down(*args: object) -> Deferred[None]:
        return fail(RuntimeError("the metadata store is down"))

    def put(slot_url: str, headers: dict[str, str], body: bytes) -> int:
        return site.request("PUT", slot_url, data=body, headers=headers).code

    slots = []
    for _ in range(2):
        slot = site.mint("a.txt", 5, owner="a@x.org")
        now = world.clock.seconds()
        record = FileRecord(
            slot.slot.file_id, "a@x.org", "a.txt", 5, None, "message",
            now, slot.slot.expires, None,
        )  # fmt: skip
        await world.store.reserve(record, DAY, lambda usage: None)
        monkeypatch.setattr(world.store, "complete", store_down)
        assert put(slot.url, slot.headers, b"hello") == 500
        monkeypatch.setattr(world.store, "complete", real_complete)
        slots.append(slot)

    retried = slots[0]
    assert put(retried.url, retried.headers, b"jello") == 409
    assert put(retried.url, retried.headers, b"hello") == 201
    response = site.request("GET", retried.url)
    assert (response.code, response.body) == (200, b"hello")
    # Recorded now: the same bytes again are its 201 still, other bytes not.
    assert put(retried.url, retried.headers, b"hello") == 201
    assert put(retried.url, retried.headers, b"jello") == 409

    abandoned = slots[1].slot
    assert await world.storage.stat(abandoned.file_id) is not None
    maintenance = Maintenance(world.store, world.storage, POLICY, world.clock)
    world.clock.advance(300 + DEAD_SLOT_AFTER + 1)
    await maintenance.sweep_once()
    assert await world.store.get(abandoned.file_id) is None
    assert await world.storage.stat(abandoned.file_id) is None
    assert await world.store.get(retried.slot.file_id) is not None


async def unused_slot(world: World, lifetime: float = 300) -> str:
    """A slot's record, granted now and never used."""
    file_id = new_file_id()
    now = world.clock.seconds()
    await world.store.reserve(
        FileRecord(
            file_id, "a@x.org", "f", 1, None, "message", now, now + lifetime, None
        ),
        DAY,
        lambda usage: None,
    )
    return file_id


@synchronous
async def test_an_unused_slot_goes_shortly_after_its_lifetime(world: World) -> None:
    """Where uploads in flight are held, an unused slot's record goes
    DEAD_SLOT_GRACE (minutes, not a day) after its PUT URL expired."""
    assert DEAD_SLOT_GRACE <= 600
    slot = await unused_slot(world)
    maintenance = Maintenance(
        world.store, world.storage, POLICY, world.clock, in_flight=lambda: ()
    )
    assert maintenance.dead_slot_after == DEAD_SLOT_GRACE
    world.clock.advance(300 + DEAD_SLOT_GRACE - 1)
    assert await maintenance.sweep_once() == 0
    assert await world.store.get(slot) is not None
    world.clock.advance(1)
    assert await maintenance.sweep_once() == 1
    assert await world.store.get(slot) is None


async def broken_upload(world: World, data: bytes = b"half of it") -> str:
    """An unused slot whose upload broke off: its partial kept, its PUT URL
    extended for an hour, as the upload side does."""
    slot = await unused_slot(world)
    upload = world.storage.begin_partial(slot, 0)
    upload.write(data)
    await upload.keep()
    await world.store.extend_slot(slot, world.clock.seconds() + 3600)
    return slot


@synchronous
async def test_a_dead_slots_partial_upload_goes_with_its_record(
    world: World,
) -> None:
    """A slot whose upload broke off keeps its record and partial upload while
    it is extended; once that plus the grace has passed the sweep removes
    both, and no stored file of another slot with them."""
    stored = await world.stored_file(expires=None)
    slot = await broken_upload(world)
    maintenance = Maintenance(
        world.store, world.storage, POLICY, world.clock, in_flight=lambda: ()
    )
    world.clock.advance(3600 + DEAD_SLOT_GRACE - 1)  # long past its 300 s
    assert await maintenance.sweep_once() == 0
    assert await world.storage.partial_size(slot) == len(b"half of it")
    assert await world.store.get(slot) is not None
    world.clock.advance(1)
    assert await maintenance.sweep_once() == 1
    assert await world.store.get(slot) is None
    assert await world.storage.partial_size(slot) is None
    assert world.storage.partials == {}
    assert await world.store.all_ids() == {stored}
    assert await world.storage.stat(stored) is not None


@synchronous
async def test_an_expired_files_sweep_still_removes_the_file(world: World) -> None:
    """With a storage that keeps partial uploads, an expired stored file is
    still removed, file then record, and no partial upload is asked after."""
    expired = await world.stored_file(expires=world.clock.seconds() + 10)
    discarded: list[str] = []
    real_discard = world.storage.discard_partial

    def discard(file_id: str) -> Deferred[bool]:
        discarded.append(file_id)
        return real_discard(file_id)

    world.storage.discard_partial = discard  # type: ignore[method-assign]
    maintenance = Maintenance(world.store, world.storage, POLICY, world.clock)
    world.clock.advance(10)
    assert await maintenance.sweep_once() == 1
    assert await world.store.get(expired) is None
    assert await world.storage.stat(expired) is None
    assert discarded == []


@synchronous
async def test_a_partial_that_cannot_be_discarded_keeps_its_record(
    world: World,
) -> None:
    """The partial upload goes before the record: if it cannot be thrown away
    the record stays, and a sweep after the lease removes both."""
    slot = await broken_upload(world)
    real_discard = world.storage.discard_partial
    failing = True

    def discard(file_id: str) -> Deferred[bool]:
        if failing:
            return fail(OSError("storage unreachable"))
        return real_discard(file_id)

    world.storage.discard_partial = discard  # type: ignore[method-assign]
    maintenance = Maintenance(
        world.store, world.storage, POLICY, world.clock, lease=100, dead_slot_after=0
    )
    world.clock.advance(3600)
    with pytest.raises(OSError, match="unreachable"):
        await maintenance.sweep_once()
    assert await world.store.get(slot) is not None
    failing = False
    world.clock.advance(100)
    assert await maintenance.sweep_once() == 1
    assert await world.store.get(slot) is None
    assert await world.storage.partial_size(slot) is None


class FilesOnly:
    """A storage that keeps no partial uploads: delete is all a sweep uses."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, file_id: str) -> Deferred[bool]:
        self.deleted.append(file_id)
        return succeed(False)


@synchronous
async def test_a_storage_without_partials_is_swept_as_before(world: World) -> None:
    """A storage that keeps no partial uploads (S3) is not asked for one: a dead
    slot's file is deleted and its record goes."""
    slot = await unused_slot(world)
    storage = FilesOnly()
    maintenance = Maintenance(
        world.store,
        storage,  # type: ignore[arg-type]
        POLICY,
        world.clock,
        dead_slot_after=0,
        reconcile_at_start=False,
    )
    world.clock.advance(300)
    assert await maintenance.sweep_once() == 1
    assert storage.deleted == [slot]
    assert await world.store.get(slot) is None


def test_unseen_uploads_keep_the_long_grace() -> None:
    """Without a list of uploads in flight, or in S3 direct mode (clients PUT
    to the bucket), unused slots keep DEAD_SLOT_AFTER; an explicit value wins."""
    clock = Clock()
    store, storage = MemoryMetadataStore(), MemoryStorage()
    assert Maintenance(store, storage, POLICY, clock).dead_slot_after == DEAD_SLOT_AFTER
    direct = Maintenance(
        store,
        storage,
        POLICY,
        clock,
        direct=object(),  # type: ignore[arg-type]
        in_flight=lambda: (),
    )
    assert direct.dead_slot_after == DEAD_SLOT_AFTER
    given = Maintenance(store, storage, POLICY, clock, dead_slot_after=5)
    assert given.dead_slot_after == 5


@synchronous
async def test_an_upload_running_past_its_slots_lifetime_is_not_lost(
    world: World,
) -> None:
    """A PUT judged a second before its slot expires and still arriving a day
    later (at the minimum rate a large file may) keeps its record through every
    sweep and is stored and recorded when it ends."""
    signer = SlotSigner(b"k" * 32, world.clock)
    receiver = UploadReceiver(signer, world.storage, world.clock, metadata=world.store)
    slot, token = signer.mint("big.bin", 10, None, "a@x.org", 300)
    now = world.clock.seconds()
    await world.store.reserve(
        FileRecord(
            slot.file_id, "a@x.org", "big.bin", 10, None, "message",
            now, slot.expires, None,
        ),
        DAY,
        lambda usage: None,
    )  # fmt: skip
    world.clock.advance(299)
    headers = Headers(
        {b"Authorization": [f"Bearer {token}".encode()], b"Content-Length": [b"10"]}
    )
    upload = receiver.start(f"/{slot.path}".encode(), headers, 10, "192.0.2.1")
    upload.write(b"hello")
    maintenance = Maintenance(
        world.store,
        world.storage,
        POLICY,
        world.clock,
        in_flight=lambda: [] if upload.finished else [upload.slot.file_id],
    )
    # Past the old fixed day too: the hold, not a long grace, keeps it.
    for _ in range(int((DAY + 3600) / HOLD_INTERVAL)):
        world.clock.advance(HOLD_INTERVAL)
        assert await maintenance.hold_in_flight() == 1
        await maintenance.sweep_once()
    assert await world.store.get(slot.file_id) is not None
    upload.write(b"world")
    info = await upload.finish()
    assert isinstance(info, FileInfo)  # stored, not kept as a partial upload
    record = await world.store.get(slot.file_id)
    assert record is not None and record.completed and record.sha256 == info.sha256
    assert await world.storage.stat(slot.file_id) is not None
    # Once it ends nothing holds it: a dead slot's record would go as usual.
    assert await maintenance.hold_in_flight() == 0


class HoldingStore:
    """Records the holds a running Maintenance makes; nothing is ever due."""

    ordered = True

    def __init__(self) -> None:
        self.holds: list[tuple[set[str], float]] = []

    def hold(self, file_ids: set[str], until: float) -> Deferred[None]:
        self.holds.append((set(file_ids), until))
        return succeed(None)

    def claim_due(self, *args: object) -> Deferred[list[FileRecord]]:
        return succeed([])


def test_the_running_service_holds_uploads_in_flight_every_interval() -> None:
    """Started with uploads in flight, the service holds their records at once
    and every HOLD_INTERVAL, each for HOLD_LEASE, and stops holding when it stops."""
    clock = Clock()
    clock.advance(1000)
    store = HoldingStore()
    flying = ["one", "two"]
    maintenance = Maintenance(
        store,  # type: ignore[arg-type]
        object(),  # type: ignore[arg-type]
        POLICY,
        clock,
        reconcile_at_start=False,
        in_flight=lambda: list(flying),
    )
    maintenance.startService()
    assert store.holds == [({"one", "two"}, 1000 + HOLD_LEASE)]
    assert HOLD_LEASE > 2 * HOLD_INTERVAL
    flying.pop()
    clock.advance(HOLD_INTERVAL)
    assert store.holds[-1] == ({"one"}, 1000 + HOLD_INTERVAL + HOLD_LEASE)
    flying.clear()
    clock.advance(HOLD_INTERVAL)
    assert len(store.holds) == 2  # nothing in flight: no query
    maintenance.stopService()
    flying.append("three")
    clock.advance(10 * HOLD_INTERVAL)
    assert len(store.holds) == 2


class OwnedStore(MemoryMetadataStore):
    """A metadata store that refuses to be started or closed by its user."""

    def start(self) -> Deferred[None]:
        raise AssertionError("started by the sweep, which does not own it")

    def close(self) -> Deferred[None]:
        raise AssertionError("closed by the sweep, which does not own it")

    def stop(self) -> Deferred[None]:
        raise AssertionError("stopped by the sweep, which does not own it")


def test_the_sweep_neither_starts_nor_closes_the_metadata_store() -> None:
    """Maintenance uses the store between its start and stop but leaves its
    lifecycle to the store's owner (the node's backends service)."""
    clock = MemoryReactorClock()
    clock.advance(START)
    maintenance = Maintenance(OwnedStore(), MemoryStorage(), POLICY, clock)
    maintenance.startService()
    clock.advance(maintenance.interval)
    result_of(maintenance.stopService())
