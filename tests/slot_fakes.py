"""Fakes for slot tests: metadata stores that are slow or threaded, a watched policy."""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.internet.defer import Deferred

from httpupload.metadata import ALL_USAGE, FileRecord, Usage, UsageNeeds
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.policy import SlotPolicy


class PendingStore(MemoryMetadataStore):
    """Reservations that finish only when the test says: a slow store thread."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Callable[[], None]] = []

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        inner = super().reserve

        def finish() -> None:
            inner(record, window_seconds, check, needs).chainDeferred(d)

        self.pending.append(finish)
        return d


class ThreadedStore(MemoryMetadataStore):
    """Runs each reservation (its check included) on another thread, as the
    SQLite and PostgreSQL stores do, and waits for it."""

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        results: list[Deferred[None]] = []
        inner = super().reserve
        worker = threading.Thread(
            target=lambda: results.append(inner(record, window_seconds, check, needs))
        )
        worker.start()
        worker.join()
        return results[0]


class WatchedPolicy(SlotPolicy):
    """A policy that notes the thread its quota rule runs on."""

    def check_quota(self, usage: Usage, size: int, purpose: str) -> None:
        THREADS.append(threading.current_thread())
        super().check_quota(usage, size, purpose)


THREADS: list[threading.Thread] = []
