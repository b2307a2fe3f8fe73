"""The XEP-0114 link: handshake, refusal, loss and back-off, on an in-memory wire."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

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


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connects to an in-memory transport, or refuses while ``refuse`` is set."""

    def __init__(self) -> None:
        self.refuse = False
        self.connections: list[tuple[IProtocol, StringTransport]] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if self.refuse:
            return fail(ConnectionRefusedError())
        protocol = protocolFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5347))
        assert protocol is not None
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


def lose(protocol: IProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


def messages(events: Sequence[dict[str, Any]]) -> str:
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
        delays: list[float] = []
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


CONFLICT = (
    b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Component already connected"
    b"</text></stream:error></stream:stream>"
)


def make_standby_service() -> tuple[ComponentService, FakeEndpoint, Clock]:
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
        standby_interval=1.5,
        jitter=lambda low, high: high,
    )
    return service, endpoint, clock


def refuse_with_conflict(endpoint: FakeEndpoint) -> None:
    protocol, _ = endpoint.connections[-1]
    protocol.dataReceived(STREAM_HEADER + CONFLICT)
    lose(protocol)


def test_conflict_means_standby() -> None:
    """A conflict is logged once at info, retried on a short fixed interval."""
    service, endpoint, clock = make_standby_service()
    assert service.state == "offline"
    with capturedLogs() as events:
        service.startService()
        delays: list[float] = []
        for _ in range(5):
            refuse_with_conflict(endpoint)
            assert service.state == "standby" and not service.online
            (call,) = clock.getDelayedCalls()
            delays.append(call.getTime() - clock.seconds())
            clock.advance(delays[-1])
    # 1.5 s plus the largest jitter (a quarter), every time: no back-off.
    assert delays == [1.875] * 5
    assert [e["log_level"].name for e in events] == ["info"]
    assert "standing by" in messages(events)
    assert service.failed_attempts == 0
    # The active node is gone: the next handshake succeeds.
    protocol, _ = endpoint.connections[-1]
    with capturedLogs() as events:
        protocol.dataReceived(STREAM_HEADER + b"<handshake/>")
    assert service.state == "online"
    assert "taking over" in messages(events)
    assert "online as upload.localhost" in messages(events)


def test_default_jitter_stays_near_the_interval() -> None:
    """Without a jitter given, standby retries fall within a quarter of the interval."""
    clock = Clock()
    endpoint = FakeEndpoint()
    service = ComponentService(
        clock, endpoint, "upload.localhost", "topsecret", handlers=[]
    )
    service.startService()
    delays = set()
    for _ in range(20):
        refuse_with_conflict(endpoint)
        (call,) = clock.getDelayedCalls()
        delays.add(call.getTime() - clock.seconds())
        clock.advance(call.getTime() - clock.seconds())
    low, high = 0.75 * service.standby_interval, 1.25 * service.standby_interval
    assert all(low <= d <= high for d in delays)
    assert len(delays) > 1


def test_replaced_node_warns_and_stands_by() -> None:
    """A server that kicks the older connection is named in a warning."""
    service, endpoint, clock = make_standby_service()
    service.startService()
    protocol, _ = endpoint.connections[-1]
    protocol.dataReceived(STREAM_HEADER + b"<handshake/>")
    with capturedLogs() as events:
        protocol.dataReceived(CONFLICT)
        lose(protocol)
    assert service.state == "standby"
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1 and "kick_new" in formatEvent(warnings[0])
    assert "Lost the link" not in messages(events)
    (call,) = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() == 1.875


def test_standby_node_whose_server_goes_away_is_offline() -> None:
    """A standby node that cannot reach the server is offline, and backs off."""
    service, endpoint, clock = make_standby_service()
    service.startService()
    refuse_with_conflict(endpoint)
    endpoint.refuse = True
    with capturedLogs():
        clock.advance(1.875)
    assert service.state == "offline"
    (call,) = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() == 1.0  # the back-off's first step
