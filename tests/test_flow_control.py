"""A storage backend that falls behind holds the body back; nothing is lost.

An object store takes parts slower than a client can send on loopback; its
``write`` then returns a Deferred and the request must stop reading until it
fires (memory stays bounded), then go on, without the slow-body timeout
blaming the client for the wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from webserver import Server, start_server

from httpupload.storage import FileInfo, PendingUpload

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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # A slow-body limit that a wait on storage must not trip.
    s = start_server(tmp_path, idle_timeout=1, min_upload_rate=1024 * 1024)
    yield s
    s.listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_body_waits_for_storage_and_arrives_whole(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    holds: list[Deferred[None]] = []
    wrappers: list[Lagging] = []
    begin = server.storage.begin_write

    def lagging_begin(file_id: str) -> Lagging:
        wrappers.append(Lagging(begin(file_id), holds))
        return wrappers[-1]

    monkeypatch.setattr(server.storage, "begin_write", lagging_begin)
    _, url, headers = server.mint("big.bin", SIZE, None)
    putting = ensureDeferred(server.request("PUT", url, data=DATA, headers=headers))
    released = 0
    while not putting.called:
        # Longer than a read; the first wait outlasts the slow-body window.
        await deferLater(reactor, 1.5 if released == 0 else 0.3, lambda: None)
        if holds and not holds[-1].called:
            # While held, at most what was already read arrives: the socket
            # is not read any more.
            assert sum(wrappers[0].received_while_held) <= 1024 * 1024
            wrappers[0].received_while_held.clear()
            holds[-1].callback(None)
            released += 1
        if wrappers and wrappers[0].received >= SIZE and all(h.called for h in holds):
            break
    response, body = await putting
    assert response.code == 201, body
    assert released >= 4
    response, body = await server.request("GET", url)
    assert (response.code, body) == (200, DATA)
