"""Keeping files and records in step: reconciliation at start, then expiry.

Files are removed before their records, everywhere: a crash in between
leaves a record without a file, which reconciliation drops, never a file
without a record that it would have to adopt.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from httpupload.direct import DirectStorage, complete_direct_uploads
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metrics import Metrics
from httpupload.policy import SlotPolicy
from httpupload.storage import Storage

log = Logger()

# A slot never completed is forgotten this long after its PUT URL expired: an
# upload that began in time may still be arriving until then.
DEAD_SLOT_AFTER = 86400.0
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
        log.warn("Adopted stored file {id:.6}… that had no record", id=file_id)
        adopted += 1
    for file_id in sorted(stored & incomplete):
        # Stored but not marked: the process died between commit and record.
        info = await storage.stat(file_id)
        if info is not None:
            await metadata.complete(
                file_id, info.sha256, info.content_type, info.created
            )
            log.info("Completed the record of stored file {id:.6}…", id=file_id)
            completed += 1
    for file_id in sorted(known - stored - incomplete):
        found = await metadata.get(file_id)
        if found is None or not found.completed:
            continue
        if found.completed_at is not None and found.completed_at >= started:
            continue  # stored while we were looking: not an orphan
        await metadata.delete(file_id)
        log.warn("Dropped the record of {id:.6}…: its file is gone", id=file_id)
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
    what it left is claimed again once the lease has run out.
    """
    due = await metadata.claim_due(now, dead_slot_after, batch, lease)
    for record in due:
        # A dead slot may have a file too: stored, but never recorded (the
        # metadata store failed after the commit, and no retry came).
        await storage.delete(record.file_id)
        await metadata.delete(record.file_id)
    return due


class Maintenance(Service):
    """Reconciles at start, then sweeps expired files and dead slots.

    Each sweep handles at most ``batch`` records, so a large backlog never
    holds the reactor for long; a full batch is followed by another soon.
    Every node sharing a store may run one: each sweep claims its batch for
    ``lease`` seconds (``MetadataStore.claim_due``).
    """

    def __init__(
        self,
        metadata: MetadataStore,
        storage: Storage,
        policy: SlotPolicy,
        clock: IReactorTime,
        interval: float = 60.0,
        batch: int = 200,
        dead_slot_after: float = DEAD_SLOT_AFTER,
        metrics: Metrics | None = None,
        lease: float = SWEEP_LEASE,
        reconcile_at_start: bool = True,
        direct: DirectStorage | None = None,
    ) -> None:
        self.metadata = metadata
        self.storage = storage
        self.policy = policy
        self.clock = clock
        self.interval = interval
        self.batch = batch
        self.dead_slot_after = dead_slot_after
        self.metrics = metrics
        self.lease = lease
        # Off for an object store: listing a whole bucket on every node's
        # start costs more than the rare orphan it would find.
        self.reconcile_at_start = reconcile_at_start
        # S3 direct mode: slots are completed by finding their objects.
        self.direct = direct
        self._timer: IDelayedCall | None = None
        self._running: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.metadata.start()
        self._running = ensureDeferred(self._start())

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

        async def stop() -> None:
            if self._running is not None:
                await self._running  # never fails: its steps log their own errors
            await self.metadata.stop()

        return ensureDeferred(stop())
