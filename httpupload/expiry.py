"""Keeping files and records in step: reconciliation at start, then expiry.

Files are removed before their records, everywhere: a crash in between
leaves a record without a file, which reconciliation drops, never a file
without a record that it would have to adopt.  An unused slot's record goes
soon after its PUT URL expired, unless an upload to it is still arriving:
the node receiving it holds the record (``MetadataStore.hold``), since a PUT
whose record is gone when it ends is refused and its file removed.  A slot
whose upload broke off keeps its PUT URL as long as its partial upload is
kept (``MetadataStore.extend_slot``); when its record goes, so does the
partial (``KeepsPartials.discard_partial``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from httpupload.logs import short_id
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metrics import Metrics
from httpupload.policy import SlotPolicy
from httpupload.storage import KeepsPartials, Storage
from httpupload.storage.s3.direct import DirectStorage, complete_direct_uploads

log = Logger()

# A slot never completed is forgotten this long after its PUT URL expired
# when nothing says which uploads are still arriving (no ``in_flight``, S3
# direct mode, the operator's purge); also the age at which unfinished S3
# multipart uploads are aborted.
DEAD_SLOT_AFTER = 86400.0
# ... and this long after it when the HTTP side names its uploads in flight,
# whose records are then held (``MetadataStore.hold``) every HOLD_INTERVAL
# for HOLD_LEASE.  A PUT judged in time is held within HOLD_INTERVAL of its
# start, well before its record could be swept; the rest of the grace covers
# a busy reactor and clocks that differ between nodes.
DEAD_SLOT_GRACE = 300.0
HOLD_INTERVAL = 60.0
HOLD_LEASE = DEAD_SLOT_GRACE
# How long a sweeper holds the records it claimed: far longer than removing a
# batch takes, so that no other node takes them while it works, yet short
# enough that a node dying midway delays the rest of its batch only so long.
SWEEP_LEASE = 600.0


async def reconcile(
    metadata: MetadataStore, storage: Storage, policy: SlotPolicy, clock: IReactorTime
) -> tuple[int, int, int]:
    """Make files and records agree; returns (adopted, completed, dropped).

    Safe while uploads go on: records are made at slot time, before a file can
    exist, and only records completed before this run began are dropped.
    """
    started = clock.seconds()
    stored = await storage.list_ids()
    known = await metadata.all_ids()
    incomplete = await metadata.incomplete_ids()
    adopted = completed = dropped = 0
    for file_id in sorted(stored - known):
        # A stored file with no record (the database was lost or restored
        # from an older copy): keep it, under the default retention.
        info = await storage.stat(file_id)
        if info is None:
            continue
        record = FileRecord.orphan(info, policy.expiry("message", info.created, None))
        try:
            await metadata.reserve(record, policy.quotas.window, lambda usage: None)
        except Exception:
            # Another node sharing the store may have adopted it just now.
            if await metadata.get(file_id) is None:
                raise
            continue
        log.warn("Adopted stored file {id} that had no record", id=short_id(file_id))
        adopted += 1
    for file_id in sorted(stored & incomplete):
        # Stored but not marked: the process died between commit and record.
        info = await storage.stat(file_id)
        if info is not None:
            await metadata.complete(
                file_id, info.sha256, info.content_type, info.created
            )
            log.info("Completed the record of stored file {id}", id=short_id(file_id))
            completed += 1
    for file_id in sorted(known - stored - incomplete):
        found = await metadata.get(file_id)
        if found is None or not found.completed:
            continue
        if found.completed_at is not None and found.completed_at >= started:
            continue  # stored while we were looking: not an orphan
        await metadata.delete(file_id)
        log.warn("Dropped the record of {id}: its file is gone", id=short_id(file_id))
        dropped += 1
    return adopted, completed, dropped


async def remove_due(
    metadata: MetadataStore,
    storage: Storage,
    now: float,
    dead_slot_after: float,
    batch: int,
    lease: float = SWEEP_LEASE,
) -> list[FileRecord]:
    """Remove one batch of expired files and dead slots; returns them.

    The batch is claimed (leased) first, so sweepers on other nodes, or an
    operator's purge, never take the same records; if this one dies midway,
    what it left is claimed again once the lease has run out.  A dead slot's
    partial upload, in a storage that keeps them, goes before its record.
    """
    due = await metadata.claim_due(now, dead_slot_after, batch, lease)
    partials = storage if isinstance(storage, KeepsPartials) else None
    for record in due:
        # A dead slot may have a file too: stored, but never recorded (the
        # metadata store failed after the commit, and no retry came).
        await storage.delete(record.file_id)
        if partials is not None and not record.completed:
            await partials.discard_partial(record.file_id)
        await metadata.delete(record.file_id)
    return due


class Maintenance(Service):
    """Reconciles at start, then sweeps expired files and dead slots.

    It uses the stores but does not own them: whoever does (the node's
    ``backends.BackendsService``, its parent) opens them before it starts and
    closes them after it stopped.

    Each sweep handles at most ``batch`` records, so a large backlog never
    holds the reactor for long; a full batch is followed by another soon.
    Every node sharing a store may run one: each sweep claims its batch for
    ``lease`` seconds (``MetadataStore.claim_due``).

    ``in_flight`` names the file ids of this node's uploads in flight; their
    records are held against every node's sweep while they arrive, so an
    unused slot's record can go ``DEAD_SLOT_GRACE`` after its PUT URL expired
    instead of ``DEAD_SLOT_AFTER``.  Every node with the http role must name
    them (it may be set after construction, before the service starts).
    """

    def __init__(
        self,
        metadata: MetadataStore,
        storage: Storage,
        policy: SlotPolicy,
        clock: IReactorTime,
        interval: float = 60.0,
        batch: int = 200,
        dead_slot_after: float | None = None,
        metrics: Metrics | None = None,
        lease: float = SWEEP_LEASE,
        reconcile_at_start: bool = True,
        direct: DirectStorage | None = None,
        in_flight: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.metadata = metadata
        self.storage = storage
        self.policy = policy
        self.clock = clock
        self.interval = interval
        self.batch = batch
        # None: DEAD_SLOT_GRACE if uploads in flight are held, else DEAD_SLOT_AFTER.
        self._dead_slot_after = dead_slot_after
        self.metrics = metrics
        self.lease = lease
        # Off for an object store: listing a whole bucket on every node's
        # start costs more than the rare orphan it would find.
        self.reconcile_at_start = reconcile_at_start
        # S3 direct mode: slots are completed by finding their objects.
        self.direct = direct
        self.in_flight = in_flight
        self._timer: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self._holder: LoopingCall | None = None
        self._holding: Deferred[None] | None = None

    @property
    def dead_slot_after(self) -> float:
        """Seconds after its PUT URL expired that an unused slot's record goes.

        Short only when nothing can still arrive unseen: this node's uploads
        are held, and in S3 direct mode (clients PUT to the bucket) none are.
        """
        if self._dead_slot_after is not None:
            return self._dead_slot_after
        if self.in_flight is None or self.direct is not None:
            return DEAD_SLOT_AFTER
        return DEAD_SLOT_GRACE

    def startService(self) -> None:
        super().startService()
        if self.in_flight is not None:
            self._holder = LoopingCall(self._hold)
            self._holder.clock = self.clock
            self._holder.start(HOLD_INTERVAL, now=True)
        self._running = ensureDeferred(self._start())

    async def hold_in_flight(self) -> int:
        """Hold the records of this node's uploads in flight; how many."""
        if self.in_flight is None:
            return 0
        file_ids = set(self.in_flight())
        if file_ids:
            await self.metadata.hold(file_ids, self.clock.seconds() + HOLD_LEASE)
        return len(file_ids)

    def _hold(self) -> Deferred[None]:
        self._holding = ensureDeferred(self._hold_logged())
        return self._holding

    async def _hold_logged(self) -> None:
        try:
            await self.hold_in_flight()
        except Exception:
            # The next hold tries again: the lease outlasts a few misses.
            log.failure("Holding the records of uploads in flight failed")

    async def _start(self) -> None:
        if not self.reconcile_at_start:
            self._schedule(0)
            return
        try:
            counts = await reconcile(
                self.metadata, self.storage, self.policy, self.clock
            )
            if any(counts):
                log.info(
                    "Reconciled storage and records: {a} adopted, {c} completed, "
                    "{d} dropped",
                    a=counts[0],
                    c=counts[1],
                    d=counts[2],
                )
        except Exception:
            log.failure("Start-up reconciliation failed")
        self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._running = ensureDeferred(self._sweep())

    async def _sweep(self) -> None:
        try:
            swept = await self.sweep_once()
        except Exception:
            log.failure("Expiry sweep failed")
            swept = 0
        self._schedule(1.0 if swept >= self.batch else self.interval)

    async def sweep_once(self) -> int:
        """Remove one batch of due files and records; returns how many."""
        if self.direct is not None:
            await complete_direct_uploads(
                self.metadata, self.direct, self.clock.seconds(), self.batch
            )
        due = await remove_due(
            self.metadata,
            self.storage,
            self.clock.seconds(),
            self.dead_slot_after,
            self.batch,
            self.lease,
        )
        if due:
            log.info("Expiry removed {count} files and dead slots", count=len(due))
        if self.metrics is not None:
            held = await self.metadata.usage_by_owner(self.clock.seconds())
            self.metrics.storage_used.set(sum(size for _, size in held.values()))
        return len(due)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._holder is not None and self._holder.running:
            self._holder.stop()
        self._holder = None

        async def stop() -> None:
            if self._running is not None:
                await self._running  # never fails: its steps log their own errors
            if self._holding is not None:
                await self._holding  # nor this one

        return ensureDeferred(stop())
