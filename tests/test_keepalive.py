"""The link watchdog: pings on a timer, cuts a link that stops answering."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel.subprotocols import StreamManager
from wokkel.test import helpers

from httpupload.xmpp.keepalive import NS_PING, LinkWatchdog


def setup(
    link_timeout: float = 60,
) -> tuple[helpers.TestableStreamManager, Clock, StringTransport]:
    clock = Clock()
    manager = helpers.TestableStreamManager(reactor=clock)
    transport = StringTransport()
    manager.stub.xmlstream.transport = transport
    watchdog = LinkWatchdog(clock, "localhost", "upload.localhost", link_timeout)
    watchdog.setHandlerParent(manager)
    return manager, clock, transport


def last_ping(manager: helpers.TestableStreamManager) -> domish.Element:
    iq = manager.stub.output[-1]
    assert iq["type"] == "get"
    assert iq["to"] == "localhost"
    assert iq["from"] == "upload.localhost"
    assert iq.firstChildElement().uri == NS_PING
    return iq


def answer(
    manager: helpers.TestableStreamManager, iq: domish.Element, kind: str
) -> None:
    reply = domish.Element((None, "iq"))
    reply["type"], reply["id"] = kind, iq["id"]
    reply["from"], reply["to"] = iq["to"], iq["from"]
    if kind == "error":
        error = reply.addElement("error")
        error["type"] = "cancel"
        error.addElement(("urn:ietf:params:xml:ns:xmpp-stanzas", "service-unavailable"))
    manager.stub.send(reply)


def test_pings_every_half_timeout_while_answered() -> None:
    """A ping goes out every link_timeout/2; results and errors both prove the link."""
    manager, clock, transport = setup(60)
    assert manager.stub.output == []
    for kind in ("result", "error", "result"):
        clock.advance(30)
        answer(manager, last_ping(manager), kind)
    assert len(manager.stub.output) == 3
    assert not transport.disconnecting


def test_dead_link_is_cut_within_the_timeout() -> None:
    """No answer within half the timeout: the connection is aborted."""
    manager, clock, transport = setup(60)
    clock.advance(30)
    last_ping(manager)
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting  # noticed 60 s after the last proof of life


def test_stops_pinging_when_the_link_goes() -> None:
    """After the stream ends no timer is left behind."""
    clock = Clock()
    factory = xmlstream.XmlStreamFactory(xmlstream.Authenticator())
    manager = StreamManager(factory, reactor=clock)
    LinkWatchdog(clock, "localhost", "upload.localhost", 60).setHandlerParent(manager)
    stream = factory.buildProtocol(None)
    stream.makeConnection(StringTransport())
    stream.dispatch(stream, xmlstream.STREAM_AUTHD_EVENT)
    assert clock.getDelayedCalls() != []  # the next ping
    stream.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []
