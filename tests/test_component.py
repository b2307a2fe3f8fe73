"""The XEP-0114 link: handshake, refusal, loss and back-off, on an in-memory wire."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from httpupload.xmpp.component import HANDSHAKE_TIMEOUT_SECONDS, ComponentService

STREAM_HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams' "
    b"from='upload.localhost' id='sid-1'>"
)
NOT_AUTHORIZED = (
    b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    b"</stream:error></stream:stream>"
)


class FakeEndpoint:
    """Connects to an in-memory transport, or refuses while ``refuse`` is set."""

    def __init__(self) -> None:
        self.refuse = False
        self.connections: list[tuple[Protocol, StringTransport]] = []

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        if self.refuse:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def make_service() -> tuple[ComponentService, FakeEndpoint, Clock]:
    clock = Clock()
    endpoint = FakeEndpoint()
    service = ComponentService(
        clock,
        endpoint,
        "upload.localhost",
        "topsecret",
        handlers=[],
        server_name="xmpp.test:5347",
        retry_policy=lambda attempt: 2.0**attempt,
    )
    return service, endpoint, clock


def lose(protocol: Protocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


def messages(events: list[dict]) -> str:
    return "\n".join(formatEvent(e) for e in events)


def test_handshake_brings_the_component_online() -> None:
    """After the server's stream header and handshake reply, the link is online."""
    service, endpoint, _clock = make_service()
    online = service.when_online()
    with capturedLogs() as events:
        service.startService()
        protocol, transport = endpoint.connections[-1]
        protocol.dataReceived(STREAM_HEADER)
        sent = transport.value()
        assert b"<handshake>" in sent
        assert b"topsecret" not in sent  # the digest, not the secret
        protocol.dataReceived(b"<handshake/>")
    assert service.online
    assert online.called
    assert "online as upload.localhost" in messages(events)
    assert "topsecret" not in messages(events)


def test_refused_handshake_is_logged_and_retried_with_backoff() -> None:
    """A wrong secret logs one clear error and retries ever more slowly."""
    service, endpoint, clock = make_service()
    with capturedLogs() as events:
        service.startService()
        delays = []
        for _ in range(4):
            protocol, _ = endpoint.connections[-1]
            protocol.dataReceived(STREAM_HEADER)
            protocol.dataReceived(NOT_AUTHORIZED)
            lose(protocol)
            (call,) = clock.getDelayedCalls()
            delays.append(call.getTime() - clock.seconds())
            clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert len(endpoint.connections) == 5
    assert service.running and not service.online
    errors = [e for e in events if e["log_level"].name == "error"]
    assert len(errors) == 4
    text = formatEvent(errors[0])
    assert "not-authorized" in text and "secret" in text
    assert "topsecret" not in messages(events)


def test_lost_link_reconnects_quickly_after_being_online() -> None:
    """A link that was up is retried at the first back-off step, then comes back."""
    service, endpoint, clock = make_service()
    service.startService()
    for _ in range(2):
        protocol, _ = endpoint.connections[-1]
        protocol.dataReceived(STREAM_HEADER + b"<handshake/>")
        assert service.online
        with capturedLogs() as events:
            lose(protocol)
        assert not service.online
        assert "Lost the link" in messages(events)
        (call,) = clock.getDelayedCalls()
        assert call.getTime() - clock.seconds() == 1.0
        clock.advance(1.0)
    assert len(endpoint.connections) == 3


def test_unreachable_server_is_retried() -> None:
    """Refused TCP connections are retried with growing delays until one succeeds."""
    service, endpoint, clock = make_service()
    endpoint.refuse = True
    with capturedLogs() as events:
        service.startService()
        clock.advance(1.0)
        clock.advance(2.0)
    assert "Cannot reach the XMPP server at xmpp.test:5347" in messages(events)
    endpoint.refuse = False
    clock.advance(4.0)
    protocol, _ = endpoint.connections[-1]
    protocol.dataReceived(STREAM_HEADER + b"<handshake/>")
    assert service.online
    assert service.failed_attempts == 0


def test_silent_server_times_out() -> None:
    """A server that accepts TCP but never answers is dropped and retried."""
    service, endpoint, clock = make_service()
    service.startService()
    protocol, transport = endpoint.connections[-1]
    with capturedLogs() as events:
        clock.advance(HANDSHAKE_TIMEOUT_SECONDS)
    assert transport.disconnecting
    assert "did not answer" in messages(events)
    lose(protocol)
    assert len(clock.getDelayedCalls()) == 1


def test_stop_cancels_retries_and_closes_the_link() -> None:
    """Stopping the service closes the stream and schedules nothing more."""
    service, endpoint, clock = make_service()
    service.startService()
    protocol, transport = endpoint.connections[-1]
    protocol.dataReceived(STREAM_HEADER + b"<handshake/>")
    service.stopService()
    assert transport.disconnecting
    lose(protocol)
    assert clock.getDelayedCalls() == []
