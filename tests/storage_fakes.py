"""Fakes for the storage tests: threads run inline, a sink that reads at its pace.

``inline_filesystem`` builds a ``FilesystemStorage`` whose "thread pool"
runs each call at once in the caller's thread and whose reactor is a
``MemoryReactorClock``: every Deferred it returns has fired by the time
the call returns, so filesystem tests need neither threads nor the global
reactor.  ``Reader`` is a storage ``Sink`` that plays a client reading at
its own pace, for ``StoredFile.send``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IProducer,
    IPullProducer,
    IPushProducer,
    IReactorFromThreads,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from httpupload.storage.filesystem import FilesystemStorage

_P = ParamSpec("_P")
_T = TypeVar("_T")


@implementer(IReactorFromThreads)
class InlineReactor(MemoryReactorClock):
    """A ``MemoryReactorClock`` whose ``callFromThread`` calls at once."""

    def callFromThread(
        self, callable: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        callable(*args, **kwargs)


class InlineThreads(ThreadPool):
    """A thread pool that runs each call at once, in the caller's thread."""

    def __init__(self) -> None:
        super().__init__(minthreads=0, maxthreads=1)

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object] | None,
        func: Callable[_P, _T],
        *args: _P.args,
        **kw: _P.kwargs,
    ) -> None:
        try:
            result: Any = func(*args, **kw)
        except BaseException:
            ok, result = False, Failure()
        else:
            ok = True
        if onResult is not None:
            onResult(ok, result)


def inline_filesystem(
    root: Path, sync: Callable[[int], None] = os.fdatasync
) -> tuple[FilesystemStorage, InlineReactor]:
    """A prepared ``FilesystemStorage`` under ``root`` whose Deferreds fire at once."""
    reactor = InlineReactor()
    storage = FilesystemStorage(root, reactor, InlineThreads(), sync=sync)
    storage.prepare()
    return storage, reactor


class _Transport:
    """The connection under a ``Reader``: aborting it cuts the response."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def abortConnection(self) -> None:
        self._reader.loseConnection()


class _Channel:
    """What ``_twisted_private.connection_of`` finds on a ``Reader``."""

    def __init__(self, reader: Reader) -> None:
        self.transport = _Transport(reader)


class Reader:
    """A ``Sink`` that reads ``window`` bytes, then waits until ``take()``.

    A pull producer is asked for more only while the window has room; a
    push producer is paused once the window is full and resumed on
    ``take()``.  ``late`` counts the bytes a push producer wrote while
    paused (what its source had in flight).  Its channel has neither clock
    nor TCP socket (no watchdog, no ``sendfile``), only a transport whose
    ``abortConnection`` marks the response ``cut``.
    """

    def __init__(self, window: int = 64 * 1024) -> None:
        self.channel = _Channel(self)
        self.window = window
        self.sentLength = 0
        self.received = bytearray()
        self.unread = 0
        self.late = 0
        self.pauses = 0
        self.producer: IProducer | None = None
        self.streaming = False
        self.paused = False
        self.finished = 0
        self.cut = False
        self._waiting: Deferred[None] | None = None
        self._finishes: list[Deferred[None]] = []

    # The Sink protocol.
    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        assert self.producer is None, "a second producer"
        self.producer, self.streaming = producer, streaming
        if not streaming:
            self._pull()

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        assert not self.finished, "a write after finish"
        if self.paused:
            self.late += len(data)
        self.received += data
        self.unread += len(data)
        if self.streaming and not self.paused and self.unread >= self.window:
            self.paused = True
            self.pauses += 1
            producer = self.producer
            assert producer is not None
            IPushProducer(producer).pauseProducing()
            self._wake()

    def finish(self) -> None:
        self.finished += 1
        finishes, self._finishes = self._finishes, []
        for d in finishes:
            d.callback(None)
        self._wake()

    def loseConnection(self) -> None:
        self.cut = True
        self._wake()

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._finishes.append(d)
        return d

    # The client.
    @property
    def done(self) -> bool:
        return bool(self.finished) or self.cut

    def wait(self) -> Deferred[None]:
        """Fires once the window is full, or the response ended or was cut."""
        if self.done or self.unread >= self.window:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting = waiting
        return waiting

    def take(self) -> None:
        """Read what arrived: the producer may send the next window."""
        self.unread = 0
        if self.producer is None:
            return
        if self.streaming:
            self.paused = False
            IPushProducer(self.producer).resumeProducing()
        else:
            self._pull()

    async def read_all(self) -> bytes:
        """Read at this pace until the response ends (or is cut)."""
        while not self.done:
            await self.wait()
            if not self.done:
                self.take()
        return bytes(self.received)

    def _pull(self) -> None:
        while self.producer is not None and not self.done:
            if self.unread >= self.window:
                self._wake()
                return
            IPullProducer(self.producer).resumeProducing()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)
