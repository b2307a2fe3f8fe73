"""Logging in as an XMPP client: a stream with STARTTLS required, then SASL.

``login`` finds the server (``--server``, else the domain's
``_xmpp-client._tcp`` SRV records through an injected DNS resolver, else the
domain on port 5222), connects, and answers with a logged-in
``XmppSession`` or ``LoginFailed`` saying why in one line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as net_error
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime, IResolver, ITCPTransport
from twisted.names.dns import Record_SRV
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from twisted.words.protocols.jabber import client, sasl, xmlstream
from twisted.words.protocols.jabber.error import StreamError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.subprotocols import StreamManager
from zope.interface import implementer

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_PORT",
    "LoginFailed",
    "NoCertificateChecks",
    "XmppSession",
    "login",
    "reason_text",
    "srv_candidates",
]

DEFAULT_PORT = 5222
#: Seconds the closing handshake may take before the socket is just closed.
CLOSE_TIMEOUT = 5.0


class LoginFailed(Exception):
    """Could not connect, secure the stream or log in (one line says why)."""


def reason_text(problem: BaseException) -> str:
    """A short reason for a failure, without Twisted's boilerplate."""
    if isinstance(problem, ConnectionRefusedError | net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(problem, net_error.DNSLookupError):
        return "no such host"
    if isinstance(problem, net_error.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(problem, OSError) and problem.strerror:
        return problem.strerror
    return str(problem).strip() or type(problem).__name__


@implementer(IPolicyForHTTPS)
class NoCertificateChecks:
    """An HTTPS policy for --insecure-tls: encrypt, but trust any certificate."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.CertificateOptions(verify=False)


class XmppSession:
    """A logged-in client stream: ``manager`` (wokkel) and the bound ``jid``."""

    def __init__(
        self, reactor: IReactorTime, factory: xmlstream.XmlStreamFactory
    ) -> None:
        self.reactor = reactor
        self.manager = StreamManager(factory, reactor=reactor)
        self.jid: JID = factory.authenticator.jid
        self.ready: Deferred[XmppSession] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._stream: xmlstream.XmlStream | None = None
        self._problem: str | None = None
        factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self._connected)
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self._authenticated)
        factory.addBootstrap(xmlstream.INIT_FAILED_EVENT, self._init_failed)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._stream_error)
        factory.addBootstrap(xmlstream.STREAM_END_EVENT, self._ended)

    def _connected(self, stream: xmlstream.XmlStream) -> None:
        self._stream = stream

    def _authenticated(self, stream: xmlstream.XmlStream) -> None:
        self.jid = stream.authenticator.jid
        if not self.ready.called:
            self.ready.callback(self)

    def _init_failed(self, reason: Failure) -> None:
        self._problem = self._problem or _login_problem(_error_of(reason))
        self.abort()

    def _stream_error(self, reason: Failure) -> None:
        error = reason.value
        if isinstance(error, StreamError):
            text = f" ({error.text})" if error.text else ""
            self._problem = f"the server closed the stream: {error.condition}{text}"

    def _ended(self, reason: Failure) -> None:
        self._stream = None
        if not self.ready.called:
            problem = self._problem or _connection_problem(reason)
            self.ready.errback(LoginFailed(problem))
        if not self.closed.called:
            self.closed.callback(None)

    def fail(self, problem: str) -> None:
        """Give up on logging in (a timeout): close, and say why."""
        self._problem = self._problem or problem
        self.abort()

    def abort(self) -> None:
        transport = self._stream.transport if self._stream is not None else None
        if ITCPTransport.providedBy(transport):
            transport.abortConnection()
        elif transport is not None:
            transport.loseConnection()

    def send(self, element: domish.Element) -> None:
        self.manager.send(element)

    async def close(self) -> None:
        """End the stream politely (what was sent is delivered first)."""
        stream = self._stream
        if stream is None or stream.transport is None:
            return
        stream.sendFooter()
        stream.transport.loseConnection()
        timer = self.reactor.callLater(CLOSE_TIMEOUT, self.abort)
        try:
            await self.closed
        finally:
            if timer.active():
                timer.cancel()


def _login_problem(error: BaseException) -> str:
    if isinstance(error, sasl.SASLAuthError):
        return f"login refused: {error.condition or 'authentication failed'}"
    if isinstance(error, sasl.SASLNoAcceptableMechanism):
        return "the server offers no SASL mechanism this client has (PLAIN)"
    if isinstance(error, xmlstream.FeatureNotAdvertized):
        return "the server offers no STARTTLS or SASL: refusing to log in in clear"
    if isinstance(error, xmlstream.TLSError):
        return "the server refused STARTTLS"
    if isinstance(error, StreamError):
        return f"the server closed the stream: {error.condition}"
    return f"login failed: {reason_text(error)}"


def _error_of(reason: Failure) -> BaseException:
    """The exception a Failure carries (typed as optional, never None here)."""
    assert reason.value is not None
    return reason.value


def _connection_problem(reason: Failure) -> str:
    error = _error_of(reason)
    text = reason_text(error)
    if "certificate verify failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "TLS: the server's certificate is not trusted "
            "(for a self-signed test server: --insecure-tls)"
        )
    if type(error).__module__.startswith("OpenSSL"):
        return f"TLS failed: {text}"
    return f"the connection closed before login: {text}"


async def srv_candidates(
    resolver: IResolver, domain: str, timeout: float
) -> list[tuple[str, int]]:
    """Hosts to try for ``domain``: its SRV records, else the domain itself.

    Records by priority (then weight, heaviest first); a record whose target
    is ``.`` (no service) or a failed lookup leaves the domain on port 5222.
    """
    # IResolver's annotations say int seconds and one record per section;
    # Twisted's resolvers take float seconds and answer a list per section.
    lookup: Any = resolver.lookupService
    try:
        answers, _authority, _additional = await lookup(
            f"_xmpp-client._tcp.{domain}", timeout=(timeout,)
        )
    except Exception:
        return [(domain, DEFAULT_PORT)]
    records = [
        answer.payload for answer in answers if isinstance(answer.payload, Record_SRV)
    ]
    records.sort(key=lambda r: (r.priority, -r.weight))
    hosts = [(str(r.target), r.port) for r in records if str(r.target) not in ("", ".")]
    return hosts or [(domain, DEFAULT_PORT)]


def _default_resolver() -> IResolver:
    """The process's resolver (``/etc/resolv.conf``, ``/etc/hosts``), made once."""
    from twisted.names import client as dns_client

    resolver: IResolver = dns_client.getResolver()
    return resolver


async def login(
    reactor: IReactorTime,
    jid: JID,
    password: str,
    *,
    server: tuple[str, int] | None = None,
    insecure_tls: bool = False,
    timeout: float = 30.0,
    resolver: IResolver | None = None,
) -> XmppSession:
    """Connect, STARTTLS (required), SASL, bind; LoginFailed with a reason.

    Certificates are checked against ``jid``'s domain unless ``insecure_tls``.
    Without ``server``, the SRV records are asked of ``resolver`` (by
    default the process's own, made on first use). ``reactor`` also
    connects (``IReactorTCP``) and times the login.
    """
    if insecure_tls:
        tls: Any = ssl.CertificateOptions(verify=False)
    else:
        tls = ssl.optionsForClientTLS(jid.host)
    if server is not None:
        candidates = [server]
    else:
        found = resolver if resolver is not None else _default_resolver()
        candidates = await srv_candidates(found, jid.host, timeout)
    last = "no server to connect to"
    for host, port in candidates:
        authenticator = client.XMPPAuthenticator(jid, password, tls)
        factory = xmlstream.XmlStreamFactory(authenticator)
        factory.noisy = False
        session = XmppSession(reactor, factory)
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        try:
            await endpoint.connect(factory)
        except (net_error.ConnectError, net_error.DNSLookupError, OSError) as e:
            last = f"cannot connect to {host}:{port}: {reason_text(e)}"
            continue
        timer = reactor.callLater(
            timeout, session.fail, f"no login within {timeout:g} s at {host}:{port}"
        )
        try:
            return await session.ready
        finally:
            if timer.active():
                timer.cancel()
    raise LoginFailed(last)
