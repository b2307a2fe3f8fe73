"""The XEP-0114 link to the XMPP server, kept up with back-off.

wokkel's ``Component`` stops its service when the handshake is refused and
connects with the global reactor; this service instead retries every failure
(unreachable server, refused handshake, lost link) with exponential back-off,
says why in one log line per attempt, and takes its reactor and endpoint as
arguments.  A link counts as up only once the handshake succeeded, so a
server that keeps refusing is retried ever more slowly, not every second.

An XMPP server accepts one connection per component name, so several nodes
with the same component are active and standby: the server answers a second
node's handshake with a ``<conflict/>`` stream error (Prosody's default
``component_conflict_resolve = "kick_new"``).  That is not a failure: the node
says so once, at info, and asks again every ``standby_interval`` seconds
(with jitter, never backing off), so it takes over within about that long
after the active node's connection is gone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Literal

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import component, xmlstream
from twisted.words.protocols.jabber.error import StreamError
from wokkel.subprotocols import StreamManager, XMPPHandler

from httpupload.xmpp.routing import RoutingXmlStream

log = Logger()

# A server that accepts TCP but never answers the handshake is given up on.
HANDSHAKE_TIMEOUT_SECONDS = 30.0

# A standby node asks again this often, give or take a quarter (jitter, so
# that several standby nodes do not knock in step).
STANDBY_RETRY_SECONDS = 1.5

LinkState = Literal["online", "standby", "offline"]

_HINTS = {
    "not-authorized": "check [component] secret against the server's component secret",
    "host-unknown": "the server has no component entry for this JID",
    "improper-addressing": "the server has no component entry for this JID",
}


class ComponentService(Service):
    """Connects ``handlers`` to the server as component ``jid``, forever."""

    def __init__(
        self,
        reactor: IReactorTime,
        endpoint: IStreamClientEndpoint,
        jid: str,
        secret: str,
        handlers: Iterable[XMPPHandler],
        server_name: str = "",
        retry_policy: Callable[[int], float] | None = None,
        standby_interval: float = STANDBY_RETRY_SECONDS,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.jid = jid
        self.server_name = server_name or repr(endpoint)
        self._reactor = reactor
        self._endpoint = endpoint
        # Capped low: after a long outage the component must be back within
        # seconds of the server, not a minute.
        self._retry_policy = retry_policy or backoffPolicy(
            initialDelay=1.0, maxDelay=10.0, factor=1.5
        )
        self.factory = component.componentFactory(jid, secret)
        self.factory.noisy = False
        self.factory.protocol = RoutingXmlStream
        self.streams = StreamManager(self.factory, reactor=reactor)
        for handler in handlers:
            handler.setHandlerParent(self.streams)
        self.factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self._authenticated)
        self.factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._stream_error)
        self.factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, self._init_failed)
        self.factory.addBootstrap(xmlstream.STREAM_END_EVENT, self._ended)
        self.failed_attempts = 0
        self.online = False
        # Another node holds the component; this one asks again and again.
        self.standby = False
        self.standby_interval = standby_interval
        self._jitter = jitter
        self._conflict = False
        self._stream: xmlstream.XmlStream | None = None
        self._connecting: Deferred | None = None
        self._retry_call: IDelayedCall | None = None
        self._handshake_timer: IDelayedCall | None = None
        self._online_waiters: list[Deferred[None]] = []

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._cancel_handshake_timer()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self._stream is not None and self._stream.transport is not None:
            self._stream.transport.loseConnection()
        return succeed(None)

    @property
    def state(self) -> LinkState:
        """``online``; ``standby`` (another node holds the component); ``offline``."""
        if self.online:
            return "online"
        return "standby" if self.standby else "offline"

    def when_online(self) -> Deferred[None]:
        """Fires once the component has completed its handshake."""
        if self.online:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._online_waiters.append(d)
        return d

    def _connect(self) -> None:
        self._retry_call = None
        d = self._endpoint.connect(self.factory)
        self._connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, stream: xmlstream.XmlStream) -> None:
        self._connecting = None
        self._stream = stream
        self._handshake_timer = self._reactor.callLater(
            HANDSHAKE_TIMEOUT_SECONDS, self._handshake_timed_out, stream
        )

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    def _handshake_timed_out(self, stream: xmlstream.XmlStream) -> None:
        self._handshake_timer = None
        log.error(
            "The XMPP server at {server} did not answer the component handshake "
            "within {timeout:.0f} s",
            server=self.server_name,
            timeout=HANDSHAKE_TIMEOUT_SECONDS,
        )
        if stream.transport is not None:
            stream.transport.loseConnection()

    def _connect_failed(self, reason: Failure) -> None:
        self._connecting = None
        if not self.running:
            return
        self.standby = False
        log.warn(
            "Cannot reach the XMPP server at {server}: {reason}",
            server=self.server_name,
            reason=reason.getErrorMessage(),
        )
        self._retry()

    def _authenticated(self, stream: xmlstream.XmlStream) -> None:
        self._cancel_handshake_timer()
        self.failed_attempts = 0
        self.online = True
        if self.standby:
            self.standby = False
            log.info(
                "The other node no longer holds component {jid}: taking over",
                jid=self.jid,
            )
        log.info(
            "XMPP component online as {jid} via {server}",
            jid=self.jid,
            server=self.server_name,
        )
        waiters, self._online_waiters = self._online_waiters, []
        for d in waiters:
            d.callback(None)

    def _stream_error(self, reason: Failure) -> None:
        error = reason.value
        condition = getattr(error, "condition", "unknown")
        if condition == "conflict":
            self._conflicted()
            return
        self.standby = False
        text = (
            f" ({error.text})" if isinstance(error, StreamError) and error.text else ""
        )
        hint = _HINTS.get(condition, "")
        log.error(
            "The XMPP server at {server} refused component {jid}: {condition}{text}"
            "{sep}{hint}",
            server=self.server_name,
            jid=self.jid,
            condition=condition,
            text=text,
            sep="; " if hint else "",
            hint=hint,
        )

    def _conflicted(self) -> None:
        """The server has another connection for this component: stand by."""
        self._conflict = True
        if self.online:
            # The server dropped this node for a newer one: it resolves
            # conflicts by kicking the old connection, so two nodes would
            # take turns.
            log.warn(
                "The XMPP server at {server} replaced component {jid} by another "
                "connection; standing by. Active/standby nodes need the server "
                "to refuse the newer connection instead (Prosody: "
                'component_conflict_resolve = "kick_new", the default)',
                server=self.server_name,
                jid=self.jid,
            )
        elif not self.standby:
            log.info(
                "Another node holds component {jid} at {server}; standing by "
                "(asking again every {interval:.1f} s)",
                jid=self.jid,
                server=self.server_name,
                interval=self.standby_interval,
            )
        self.standby = True

    def _init_failed(self, reason: Failure) -> None:
        log.error(
            "Component handshake with {server} failed: {reason}",
            server=self.server_name,
            reason=reason.getErrorMessage(),
        )
        if self._stream is not None and self._stream.transport is not None:
            self._stream.transport.loseConnection()

    def _ended(self, reason: Failure) -> None:
        self._cancel_handshake_timer()
        was_online, self.online = self.online, False
        self._stream = None
        conflict, self._conflict = self._conflict, False
        if not self.running:
            return
        if conflict:
            self.failed_attempts = 0
            spread = self.standby_interval / 4
            delay = self._jitter(
                self.standby_interval - spread, self.standby_interval + spread
            )
            self._retry_call = self._reactor.callLater(delay, self._connect)
            return
        self.standby = False
        if was_online:
            log.warn(
                "Lost the link to the XMPP server at {server}: {reason}",
                server=self.server_name,
                reason=reason.getErrorMessage()
                if isinstance(reason, Failure)
                else reason,
            )
        self._retry()

    def _retry(self) -> None:
        delay = self._retry_policy(self.failed_attempts)
        self.failed_attempts += 1
        log.info(
            "Reconnecting to {server} in {delay:.1f} s (attempt {attempt})",
            server=self.server_name,
            delay=delay,
            attempt=self.failed_attempts,
        )
        self._retry_call = self._reactor.callLater(delay, self._connect)
