"""``Storage`` in a dictionary: for tests, and for embedders testing their own service.

It honours the same protocol as the filesystem and S3 backends: nothing an
upload writes is visible before ``commit``, a second commit of one file id
fails with ``DuplicateFile``, ``abort`` is safe to call twice, and a stored
file is sent as a push producer that stops when the client stops reading
and is cut off (as every real backend does) when the client takes no byte
for the site's idle timeout.  Every call answers at once, so a test on a
``Clock`` never waits for a thread.

Knobs a test turns: ``room`` (bytes it can take: past it, ``commit`` fails
with ``NoSpace``, as a full disk does), ``behind`` (while true, each
write returns a Deferred that fires on ``catch_up()``, as an object store
still sending parts does) and ``chunk_size`` (how much one write of a
download sends).
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from httpupload.errors import DuplicateFile, NoSpace
from httpupload.slots import FILE_ID_RE
from httpupload.storage import FileInfo, Sink, StoredFile
from httpupload.storage.sending import WriteWatchdog, abort_connection, log_stall

DEFAULT_CHUNK_SIZE = 64 * 1024


class MemoryUpload:
    """One upload being written: its bytes are kept apart until ``commit``."""

    def __init__(self, storage: MemoryStorage, file_id: str) -> None:
        self.storage = storage
        self.file_id = file_id
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.aborted = False

    def write(self, data: bytes) -> Deferred[None] | None:
        """Keep a chunk; a Deferred (fired by ``catch_up``) while storage is behind."""
        if not self.done:
            self.chunks.append(data)
            self.size += len(data)
        if self.storage.behind:
            waiting: Deferred[None] = Deferred()
            self.storage.waiting.append(waiting)
            return waiting
        return None

    def commit(self, info: FileInfo) -> Deferred[None]:
        """Make the file visible; fails with DuplicateFile, or NoSpace past ``room``."""
        if self.done:
            raise RuntimeError("upload already committed or aborted")
        self.done = True
        self.storage.pending.discard(self)
        if info.file_id in self.storage.files:
            return fail(DuplicateFile("The file is already stored"))
        room = self.storage.room
        if room is not None and self.size > room - self.storage.used:
            return fail(NoSpace("Insufficient storage"))
        self.storage.files[info.file_id] = (info, b"".join(self.chunks))
        return succeed(None)

    def abort(self) -> Deferred[None]:
        """Throw the bytes away; safe to call more than once."""
        if not self.done:
            self.done = self.aborted = True
            self.storage.pending.discard(self)
            self.storage.aborted += 1
        self.chunks = []
        return succeed(None)


class MemoryPartialUpload(MemoryUpload):
    """A write into a slot's partial upload (``partials``), from an offset.

    Its bytes go into the partial at once, as a file on disk would hold
    them; ``keep`` leaves them there, ``abort`` throws the partial away,
    ``commit`` makes it the stored file.
    """

    def __init__(self, storage: MemoryStorage, file_id: str, offset: int) -> None:
        super().__init__(storage, file_id)
        kept = storage.partials.setdefault(file_id, bytearray())
        del kept[offset:]
        self.chunks = [bytes(kept)]
        self.size = offset
        self._kept = kept

    def write(self, data: bytes) -> Deferred[None] | None:
        if not self.done:
            self._kept += data
        return super().write(data)

    def commit(self, info: FileInfo) -> Deferred[None]:
        """As ``MemoryUpload.commit``; the partial is gone once stored."""

        def consumed(result: None) -> None:
            self.storage.partials.pop(self.file_id, None)
            return result

        return super().commit(info).addCallback(consumed)

    def keep(self) -> Deferred[int]:
        """Leave the bytes in ``partials``; fires with how many there are."""
        if self.done:
            return succeed(0)
        self.done = True
        self.storage.pending.discard(self)
        return succeed(len(self._kept))

    def abort(self) -> Deferred[None]:
        if not self.done:
            self.storage.partials.pop(self.file_id, None)
        return super().abort()


@implementer(IPushProducer)
class MemorySender:
    """Writes a slice of a stored file into a sink, a chunk at a time.

    A push producer: it writes while the transport takes bytes, stops when
    the transport pauses it (the client stopped reading), and the sink's
    connection is cut if the client takes nothing for the idle timeout.
    """

    def __init__(self, request: Sink, data: bytes, chunk_size: int) -> None:
        self.request: Sink | None = request
        self.data = data
        self.chunk_size = chunk_size
        self.sent = 0
        self.paused = False
        self._sending = False
        self._watchdog = WriteWatchdog.for_sink(request, self._stalled)

    def start(self) -> None:
        assert self.request is not None
        if self._watchdog is not None:
            self._watchdog.start()
        self.request.registerProducer(self, True)
        self._send()

    def _send(self) -> None:
        if self._sending:
            return  # resumed from inside our own write
        self._sending = True
        try:
            while self.request is not None and not self.paused:
                if self.sent == len(self.data):
                    request = self.request
                    self._release()
                    request.unregisterProducer()
                    request.finish()
                    return
                chunk = self.data[self.sent : self.sent + self.chunk_size]
                self.sent += len(chunk)
                self.request.write(chunk)
        finally:
            self._sending = False

    def _stalled(self) -> None:
        assert self._watchdog is not None
        log_stall(self._watchdog.timeout, self.sent, len(self.data))
        request = self.request
        self._release()
        if request is not None:
            request.unregisterProducer()
            abort_connection(request)

    def _release(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        self.request = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self._watchdog is not None:
            self._watchdog.progress()
        self._send()

    def stopProducing(self) -> None:
        self._release()


class MemoryFile:
    """A stored file opened for reading."""

    def __init__(self, info: FileInfo, data: bytes, chunk_size: int) -> None:
        self.info = info
        self._data: bytes | None = data
        self._chunk_size = chunk_size

    def send(self, request: Sink, offset: int, length: int) -> None:
        """Send ``length`` bytes from ``offset``, paced by the client, then finish."""
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("already sent or closed")
        MemorySender(request, data[offset : offset + length], self._chunk_size).start()

    def close(self) -> None:
        self._data = None


class MemoryStorage:
    """The ``Storage`` interface in memory; ``files``: id -> (info, bytes)."""

    def __init__(
        self, *, room: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        self.files: dict[str, tuple[FileInfo, bytes]] = {}
        # Partial uploads kept for resumption: id -> bytes so far.
        self.partials: dict[str, bytearray] = {}
        # Uploads begun and neither committed nor aborted.
        self.pending: set[MemoryUpload] = set()
        self.aborted = 0
        self.room = room
        self.chunk_size = chunk_size
        self.behind = False
        self.waiting: list[Deferred[None]] = []
        self.started = False
        self.closed = False

    @property
    def used(self) -> int:
        """Bytes held by stored files."""
        return sum(len(data) for _, data in self.files.values())

    def catch_up(self) -> None:
        """Stop being behind: every write waiting is done."""
        self.behind = False
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def start(self) -> Deferred[None]:
        self.started = True
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)

    def begin_write(self, file_id: str) -> MemoryUpload:
        if not FILE_ID_RE.fullmatch(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        upload = MemoryUpload(self, file_id)
        self.pending.add(upload)
        return upload

    def begin_partial(self, file_id: str, offset: int) -> MemoryPartialUpload:
        if not FILE_ID_RE.fullmatch(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        if offset > len(self.partials.get(file_id, b"")):
            raise ValueError(f"offset {offset} is past the partial upload's end")
        upload = MemoryPartialUpload(self, file_id, offset)
        self.pending.add(upload)
        return upload

    def partial_size(self, file_id: str) -> Deferred[int | None]:
        kept = self.partials.get(file_id)
        return succeed(None if kept is None else len(kept))

    def partial_sha256(self, file_id: str, length: int) -> Deferred[hashlib._Hash]:
        kept = self.partials.get(file_id, bytearray())
        if length > len(kept):
            return fail(ValueError("fewer bytes are kept"))
        return succeed(hashlib.sha256(kept[:length]))

    def discard_partial(self, file_id: str) -> Deferred[bool]:
        return succeed(self.partials.pop(file_id, None) is not None)

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        found = self.files.get(file_id)
        if found is None:
            return succeed(None)
        return succeed(MemoryFile(found[0], found[1], self.chunk_size))

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        found = self.files.get(file_id)
        return succeed(None if found is None else found[0])

    def delete(self, file_id: str) -> Deferred[bool]:
        return succeed(self.files.pop(file_id, None) is not None)

    def list_ids(self) -> Deferred[set[str]]:
        return succeed(set(self.files))

    def free_space(self) -> Deferred[int | None]:
        return succeed(None if self.room is None else self.room - self.used)


__all__ = [
    "MemoryFile",
    "MemoryPartialUpload",
    "MemorySender",
    "MemoryStorage",
    "MemoryUpload",
]
