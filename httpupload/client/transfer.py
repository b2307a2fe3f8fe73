"""The PUT of a slot: the file streamed from disk with treq, progress, a watchdog.

``put_file`` is what ``UploadClient.put`` does; ``FileProducer`` is the body
(never more than the slot's size, one chunk per reactor turn), ``Watchdog``
gives up a transfer that makes no progress.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, BinaryIO

import treq
from treq.client import HTTPClient
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from httpupload.client.errors import HttpError, TransferFailed, UploadError
from httpupload.client.parsing import Slot, without_query

__all__ = [
    "CHUNK_SIZE",
    "MAX_ERROR_BODY",
    "FileProducer",
    "ProgressCallback",
    "Watchdog",
    "put_file",
]

CHUNK_SIZE = 64 * 1024
#: At most this much of an HTTP error body is kept (and read).
MAX_ERROR_BODY = 4096

#: ``progress(sent, total)``: bytes handed to the connection so far, file size.
ProgressCallback = Callable[[int, int], None]


@implementer(IBodyProducer)
class FileProducer:
    """Streams ``length`` bytes of an open file, one chunk per reactor turn.

    Like twisted.web's ``FileBodyProducer``, but it never sends more than the
    size announced in the slot, fails if the file ends early, and reports
    each chunk to ``on_chunk`` (progress, and the idle watchdog).
    """

    def __init__(
        self,
        file: BinaryIO,
        length: int,
        cooperator: task.Cooperator,
        on_chunk: Callable[[int], None] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.length = length
        self._file = file
        self._cooperator = cooperator
        self._on_chunk = on_chunk
        self._chunk_size = chunk_size
        self._task: task.CooperativeTask | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._task = self._cooperator.cooperate(self._chunks(consumer))
        done = self._task.whenDone()

        def stopped(reason: Failure) -> Deferred[None]:
            reason.trap(task.TaskStopped)
            # IBodyProducer: after stopProducing, never fire.
            return Deferred()

        done.addCallbacks(lambda _: None, stopped)
        return done

    def _chunks(self, consumer: IConsumer) -> Generator[None]:
        sent = 0
        while sent < self.length:
            data = self._file.read(min(self._chunk_size, self.length - sent))
            if not data:
                raise UploadError(
                    f"the file ended after {sent} of its {self.length} bytes "
                    "(it changed during the upload)"
                )
            consumer.write(data)
            sent += len(data)
            if self._on_chunk is not None:
                self._on_chunk(sent)
            yield None

    def pauseProducing(self) -> None:
        if self._task is not None:
            self._task.pause()

    def resumeProducing(self) -> None:
        if self._task is not None:
            self._task.resume()

    def stopProducing(self) -> None:
        if self._task is not None:
            try:
                self._task.stop()
            except task.TaskDone:
                pass


class Watchdog:
    """Cancels a Deferred when ``poke`` was not called for ``timeout`` s."""

    def __init__(self, clock: IReactorTime, timeout: float | None) -> None:
        self._clock = clock
        self._timeout = timeout
        self._call: IDelayedCall | None = None
        self._target: Deferred[Any] | None = None
        self.fired = False

    def watch(self, target: Deferred[Any]) -> None:
        self._target = target
        self.poke()

    def poke(self, _: object = None) -> None:
        if self._timeout is None or self._target is None:
            return
        if self._call is not None and self._call.active():
            self._call.reset(self._timeout)
        else:
            self._call = self._clock.callLater(self._timeout, self._expire)

    def _expire(self) -> None:
        self.fired = True
        if self._target is not None:
            self._target.cancel()

    def stop(self) -> None:
        self._target = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


# twisted.web's client wraps the causes of a failed request in these.
_WRAPPERS = (RequestGenerationFailed, RequestTransmissionFailed, ResponseFailed)


def _describe(reason: BaseException) -> str:
    """One line for a connection failure, unwrapping twisted.web's wrappers."""
    if isinstance(reason, _WRAPPERS):
        parts = [_describe(f.value) for f in reason.reasons]
        return "; ".join(part for part in parts if part) or type(reason).__name__
    text = str(reason).strip()
    if isinstance(reason, CancelledError):
        return "cancelled"
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__


def _first_local_error(reason: BaseException) -> BaseException | None:
    """The producer's own error (a file problem) inside twisted.web's wrappers."""
    if isinstance(reason, _WRAPPERS):
        for failure in reason.reasons:
            found = _first_local_error(failure.value)
            if found is not None:
                return found
        return None
    if isinstance(reason, OSError | UploadError):
        return reason
    return None


async def put_file(
    reactor: IReactorTime,
    http: HTTPClient,
    slot: Slot,
    file: BinaryIO,
    progress: ProgressCallback | None = None,
    idle_timeout: float | None = None,
) -> None:
    """PUT ``slot.size`` bytes of ``file`` (from its position) to the slot.

    Sends the slot's allowed headers, ``Content-Length`` and
    ``Content-Type`` (the slot's, else ``application/octet-stream``).
    HttpError for a non-2xx answer, TransferFailed when no answer came or
    the transfer stalled for ``idle_timeout`` seconds; a read error of the
    file is raised as is.
    """
    watchdog = Watchdog(reactor, idle_timeout)
    total = slot.size

    def on_chunk(sent: int) -> None:
        watchdog.poke()
        if progress is not None:
            progress(sent, total)

    cooperator = task.Cooperator(scheduler=lambda work: reactor.callLater(0, work))
    producer = FileProducer(file, total, cooperator, on_chunk)
    headers = Headers()
    for name, value in slot.headers:
        headers.addRawHeader(name, value)
    # A slot without a type still gets one: a direct-mode (presigned S3)
    # slot binds application/octet-stream and refuses any other or none.
    headers.addRawHeader(
        "Content-Type", slot.content_type or "application/octet-stream"
    )
    if progress is not None:
        progress(0, total)
    shown_url = without_query(slot.put_url)
    try:
        sending = http.put(slot.put_url, data=producer, headers=headers)
        watchdog.watch(sending)
        response: IResponse = await sending
        body = await _error_body(response, watchdog)
    except Exception as e:
        if watchdog.fired:
            raise TransferFailed(
                f"upload to {shown_url} made no progress for {idle_timeout:g} s"
            ) from None
        if isinstance(e, CancelledError):
            raise
        local = _first_local_error(e)
        if local is not None:
            raise local from None
        raise TransferFailed(f"upload to {shown_url} failed: {_describe(e)}") from e
    finally:
        watchdog.stop()
        cooperator.stop()
    if not 200 <= response.code < 300:
        phrase = response.phrase.decode("latin-1", "replace")
        types = response.headers.getRawHeaders("Content-Type") or [""]
        raise HttpError(response.code, phrase, body, shown_url, types[0])


async def _error_body(response: IResponse, watchdog: Watchdog) -> str:
    """The response body, bounded (it only matters for an error)."""
    chunks: list[bytes] = []
    kept = 0

    def collect(data: bytes) -> None:
        nonlocal kept
        watchdog.poke()
        if kept < MAX_ERROR_BODY:
            chunks.append(data[: MAX_ERROR_BODY - kept])
            kept += len(chunks[-1])

    try:
        await treq.collect(response, collect)
    except (ResponseFailed, PotentialDataLoss):
        pass  # the status is the answer; a cut-off body is only less detail
    return b"".join(chunks).decode("utf-8", "replace")
