"""A storage backend that falls behind holds the body back; nothing is lost.

An object store takes parts slower than a client can send; its
``write`` then returns a Deferred and the request must stop reading until it
fires (memory stays bounded), then go on, without the slow-body timeout
blaming the client for the wait.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred

from httpupload.storage import FileInfo, KeptUpload, PendingUpload
from httpupload.storage.memory import MemoryStorage
from httpupload.testing import make_harness, result_of

SIZE = 8 * 1024 * 1024
DATA = os.urandom(SIZE)


class Lagging:
    """Wraps a real pending upload; every 1 MiB it asks the body to wait."""

    def __init__(self, inner: PendingUpload, holds: list[Deferred[None]]) -> None:
        self.inner = inner
        self.holds = holds
        self.received = 0
        self.since_hold = 0
        self.received_while_held: list[int] = []

    def write(self, data: bytes) -> Deferred[None] | None:
        if self.holds and not self.holds[-1].called:
            self.received_while_held.append(len(data))
        self.inner.write(data)
        self.received += len(data)
        self.since_hold += len(data)
        if self.since_hold >= 1024 * 1024:
            self.since_hold = 0
            hold: Deferred[None] = Deferred()
            self.holds.append(hold)
            return hold
        return None

    def commit(self, info: FileInfo) -> Deferred[None]:
        return self.inner.commit(info)

    def abort(self) -> Deferred[None]:
        return self.inner.abort()

    def keep(self) -> Deferred[int]:
        assert isinstance(self.inner, KeptUpload)
        return self.inner.keep()


class LaggingStorage(MemoryStorage):
    """Memory storage whose uploads are ``Lagging``."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: list[Deferred[None]] = []
        self.wrappers: list[Lagging] = []

    def begin_write(self, file_id: str) -> Lagging:  # type: ignore[override]
        self.wrappers.append(Lagging(super().begin_write(file_id), self.holds))
        return self.wrappers[-1]

    def begin_partial(self, file_id: str, offset: int) -> Lagging:  # type: ignore[override]
        inner = super().begin_partial(file_id, offset)
        self.wrappers.append(Lagging(inner, self.holds))
        return self.wrappers[-1]


def test_the_body_waits_for_storage_and_arrives_whole() -> None:
    """While storage is behind the site stops reading (at most one more read
    arrives), the rate floor does not blame the client, and the body is whole."""
    storage = LaggingStorage()
    # A slow-body limit that a wait on storage must not trip.
    h = make_harness(
        storage=storage, http={"idle_timeout": 1, "min_upload_rate": 1024 * 1024}
    )
    holds, wrappers = storage.holds, storage.wrappers
    slot = h.mint("big.bin", SIZE)
    putting = h.start_request("PUT", slot.url, data=DATA, headers=slot.headers)
    released = 0
    for _ in range(100):
        if putting.called:
            break
        # The first wait outlasts the slow-body window.
        h.advance(1.5 if released == 0 else 0.3)
        if holds and not holds[-1].called:
            # While held, at most what was already read arrives: the
            # connection is not read any more.
            assert sum(wrappers[0].received_while_held) <= 1024 * 1024
            wrappers[0].received_while_held.clear()
            holds[-1].callback(None)
            released += 1
        h.flush()
    assert putting.called, "the PUT never finished"
    put = result_of(putting)
    assert put.code == 201, put.body
    assert released >= 4
    answer = h.request("GET", slot.url)
    assert (answer.code, answer.body) == (200, DATA)
