"""Watching the component link: an XEP-0199 ping every half ``link_timeout``.

TCP alone can take many minutes to notice a peer that vanished (a server
host that lost power, a dropped NAT entry).  Any answer to a ping, result or
error, proves the link; none within half the timeout cuts the connection, and
``ComponentService`` reconnects.  So a dead link is noticed within
``link_timeout`` seconds.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.xmlstream import TimeoutError
from twisted.words.xish import domish
from wokkel import generic
from wokkel.subprotocols import XMPPHandler

NS_PING = "urn:xmpp:ping"

log = Logger()


class PingRequest(generic.Request):
    def __init__(self, recipient: JID, sender: JID, timeout: float) -> None:
        super().__init__(recipient=recipient, sender=sender, stanzaType="get")
        self.timeout = timeout

    def toElement(self) -> domish.Element:
        element: domish.Element = super().toElement()
        element.addElement((NS_PING, "ping"))
        return element


class LinkWatchdog(XMPPHandler):
    """Pings ``target`` while the stream is up; cuts the link if nothing answers."""

    def __init__(
        self, clock: IReactorTime, target: str, sender: str, link_timeout: float
    ) -> None:
        super().__init__()
        self._clock = clock
        self.target = JID(target)
        self.sender = JID(sender)
        self.interval = link_timeout / 2
        self._timer: IDelayedCall | None = None

    def connectionInitialized(self) -> None:
        self._schedule()

    def connectionLost(self, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self) -> None:
        self._timer = self._clock.callLater(self.interval, self._ping)

    def _ping(self) -> None:
        self._timer = None
        stream = self.xmlstream
        d = self.request(PingRequest(self.target, self.sender, self.interval))
        d.addCallbacks(self._answered, self._unanswered, errbackArgs=(stream,))

    def _answered(self, _: object) -> None:
        if self.xmlstream is not None:
            self._schedule()

    def _unanswered(self, reason: Failure, stream: object) -> None:
        if reason.check(StanzaError):
            self._answered(None)  # an error reply still proves the link
            return
        if reason.check(TimeoutError):
            log.warn(
                "No answer to a ping from {target} within {timeout:.0f} s: "
                "the link looks dead, reconnecting",
                target=self.target.full(),
                timeout=self.interval,
            )
        else:
            log.failure("Pinging {target} failed", reason, target=self.target.full())
        transport = getattr(stream, "transport", None)
        if stream is self.xmlstream and transport is not None:
            transport.abortConnection()
