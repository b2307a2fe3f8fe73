"""Streaming a stored file into a response, a chunk at a time.

Our own, instead of twisted.web.static's producers: importing that module
trips a deprecation warning, and range requests (a later step) want an
offset and length here anyway.
"""

from __future__ import annotations

from typing import BinaryIO

from twisted.internet.interfaces import IPullProducer
from twisted.web.server import Request
from zope.interface import implementer

# Large enough that a big download costs few trips through Python.
CHUNK_SIZE = 256 * 1024


@implementer(IPullProducer)
class FileSender:
    """Writes ``length`` bytes of ``handle`` from ``offset`` on, then finishes."""

    def __init__(
        self, request: Request, handle: BinaryIO, offset: int, length: int
    ) -> None:
        self.request: Request | None = request
        self.handle: BinaryIO | None = handle
        if offset:
            handle.seek(offset)
        self.remaining = length

    def start(self) -> None:
        assert self.request is not None
        self.request.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.request is None or self.handle is None:
            return
        data = (
            self.handle.read(min(CHUNK_SIZE, self.remaining)) if self.remaining else b""
        )
        if data:
            self.remaining -= len(data)
            # May re-enter resumeProducing through the transport.
            self.request.write(data)
            return
        request = self.request
        self.stopProducing()
        request.unregisterProducer()
        if self.remaining:
            # The file is shorter than recorded: cut the response rather
            # than end it as if it were whole.
            request.loseConnection()
        else:
            request.finish()

    def stopProducing(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.handle = None
        self.request = None
