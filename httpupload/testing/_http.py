"""An HTTP client (twisted.web's Agent, treq) over the in-memory wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from httpupload.testing._wire import Wire


@implementer(IBodyProducer)
class SlowBody:
    """A request body the test writes piece by piece; ``paused`` shows backpressure."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.consumer: Any = None
        self.paused = False
        self.stopped = False
        self._done: Deferred[None] = Deferred()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        return self._done

    def write(self, data: bytes) -> None:
        assert self.consumer is not None, "the request has not started yet"
        self.consumer.write(data)

    def finish(self) -> None:
        """All bytes are written (the client library then reads the answer)."""
        if not self._done.called:
            self._done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class WholeBody(SlowBody):
    """A body written whole as soon as the request starts."""

    def __init__(self, data: bytes) -> None:
        super().__init__(len(data))
        self.data = data

    def startProducing(self, consumer: Any) -> Deferred[None]:
        done = super().startProducing(consumer)
        self.write(self.data)
        self.finish()
        return done


def body_producer(data: Any) -> IBodyProducer:
    """treq's ``data``: a body producer as given, else bytes written whole at once."""
    if IBodyProducer.providedBy(data):
        return data
    return WholeBody(data if isinstance(data, bytes) else str(data).encode("utf-8"))


@implementer(IAgentEndpointFactory)
@dataclass
class MemoryEndpoints:
    """Every URI's endpoint is a new connection on the wire (https: as TLS)."""

    harness: Wire

    def endpointForURI(self, uri: URI) -> MemoryEndpoint:
        return MemoryEndpoint(self.harness, uri.scheme == b"https")


@dataclass
class MemoryEndpoint:
    """Connects a client factory's protocol to the wire's site, at once."""

    harness: Wire
    tls: bool

    def connect(self, factory: Factory) -> Deferred[IProtocol]:
        protocol: IProtocol | None = factory.buildProtocol(self.harness.host)
        assert protocol is not None
        self.harness.connect(protocol, tls=self.tls)
        return succeed(protocol)


@dataclass
class Answer:
    """A response as the client got it: status, headers, whole body."""

    code: int
    headers: Headers
    body: bytes
    length: int | None

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None
