"""An XEP-0363 client for Twisted: find the upload service, get a slot, PUT a file.

Works over any connected wokkel stream: a client's or a component's
``StreamManager`` (or an ``XMPPHandler`` attached to one), anything with
wokkel's ``request(generic.Request) -> Deferred``. It speaks
``urn:xmpp:http:upload:0`` to any compliant service (httpupload, Prosody's
``mod_http_file_share``, ejabberd's ``mod_http_upload``, …)::

    import httpupload  # first: makes wokkel importable on current Twisted
    from httpupload.client import UploadClient, UploadError

    uploader = UploadClient(reactor, stream_manager)
    try:
        url = await uploader.upload("photo.jpg", domain="example.org")
    except UploadError as e:
        print(e)

The file is streamed from disk (never read whole), a progress callback sees
each chunk, a file over the service's advertised ``max-file-size`` is refused
before the slot request, and every XMPP or HTTP failure arrives as one
``UploadError`` subclass carrying the server's own text.
"""

from __future__ import annotations

import html
import mimetypes
import os
import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import treq
from treq.client import HTTPClient
from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import disco, generic
from zope.interface import implementer

from httpupload.dates import InvalidDateTime, parse_datetime
from httpupload.errors import HttpUploadError

__all__ = [
    "ALLOWED_HEADERS",
    "NS_UPLOAD",
    "FileTooLarge",
    "HttpError",
    "IQRequester",
    "NoAnswer",
    "NoUploadService",
    "ProgressCallback",
    "ProtocolError",
    "Slot",
    "SlotRefused",
    "TransferFailed",
    "UploadClient",
    "UploadError",
    "UploadService",
    "XmppError",
    "parse_slot",
    "slot_headers",
    "upload_file",
]

NS_UPLOAD = "urn:xmpp:http:upload:0"
#: The only slot headers XEP-0363 lets a client copy into its PUT (§4, §8.2).
ALLOWED_HEADERS = ("Authorization", "Cookie", "Expires")
_ALLOWED = {name.lower(): name for name in ALLOWED_HEADERS}

#: Seconds to wait for an IQ answer (disco, slot request).
DEFAULT_TIMEOUT = 30.0
#: Seconds a PUT may make no progress (nothing sent, or no answer after the
#: body) before it is given up.
DEFAULT_IDLE_TIMEOUT = 60.0
CHUNK_SIZE = 64 * 1024
#: At most this much of an HTTP error body is kept (and read).
MAX_ERROR_BODY = 4096

#: ``progress(sent, total)``: bytes handed to the connection so far, file size.
ProgressCallback = Callable[[int, int], None]


# ---- errors


class UploadError(HttpUploadError):
    """Base of every failure of an upload; ``text`` says what happened."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NoUploadService(UploadError):
    """The domain lists no entity offering ``urn:xmpp:http:upload:0``."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"{domain} offers no HTTP File Upload service (XEP-0363)")
        self.domain = domain


class FileTooLarge(UploadError):
    """The file is over the service's limit.

    Raised before any slot request when the service advertised
    ``max-file-size`` (``refused`` is None), or when the service refused the
    slot with ``<file-too-large/>`` (``refused`` is that ``SlotRefused``).
    """

    def __init__(
        self,
        size: int,
        max_file_size: int | None,
        service: str,
        refused: SlotRefused | None = None,
    ) -> None:
        if refused is not None:
            text = f"{service} refused {size} bytes as too large"
            if max_file_size is not None:
                text += f" (at most {max_file_size})"
            if refused.server_text:
                text += f": {refused.server_text}"
        else:
            text = (
                f"the file is {size} bytes; {service} takes at most "
                f"{max_file_size} bytes"
            )
        super().__init__(text)
        self.size = size
        self.max_file_size = max_file_size
        self.service = service
        self.refused = refused


class XmppError(UploadError):
    """An IQ (disco or slot request) answered with a stanza error."""

    def __init__(
        self,
        what: str,
        entity: str,
        condition: str,
        error_type: str | None,
        server_text: str | None,
        app_condition: domish.Element | None = None,
    ) -> None:
        detail = condition + (f" ({server_text})" if server_text else "")
        super().__init__(f"{what} refused by {entity}: {detail}")
        self.entity = entity
        self.condition = condition
        self.error_type = error_type
        #: The ``<text/>`` of the stanza error, as the server wrote it.
        self.server_text = server_text
        self.app_condition = app_condition


class SlotRefused(XmppError):
    """The service refused the slot request (XEP-0363 §5)."""

    @property
    def too_large(self) -> bool:
        """The error carries XEP-0363's ``<file-too-large/>``."""
        element = self.app_condition
        return element is not None and (element.uri, element.name) == (
            NS_UPLOAD,
            "file-too-large",
        )

    @property
    def max_file_size(self) -> int | None:
        """``<file-too-large><max-file-size>``, when the error carries it."""
        element = self.app_condition
        if element is None or not self.too_large:
            return None
        for child in element.elements(NS_UPLOAD, "max-file-size"):
            return _positive_int(str(child))
        return None

    @property
    def retry_at(self) -> float | None:
        """``<retry stamp=…/>`` as Unix time: when asking again may succeed."""
        element = self.app_condition
        if element is None or (element.uri, element.name) != (NS_UPLOAD, "retry"):
            return None
        return _parse_stamp(element.getAttribute("stamp"))


class NoAnswer(UploadError):
    """An IQ got no answer: timed out, or the stream closed first."""


class ProtocolError(UploadError):
    """The service's answer does not follow XEP-0363 (no slot, no URL, …)."""


class HttpError(UploadError):
    """The PUT got an HTTP status other than 2xx."""

    def __init__(
        self, status: int, phrase: str, body: str, url: str, content_type: str = ""
    ) -> None:
        text = f"HTTP {status} {phrase}".rstrip()
        summary = _body_summary(body, content_type)
        if summary:
            text += f": {summary}"
        super().__init__(f"upload to {url} failed: {text}")
        self.status = status
        self.phrase = phrase
        #: The response body (at most MAX_ERROR_BODY bytes, decoded leniently).
        self.body = body
        #: The PUT URL without its query string (which may hold a token).
        self.url = url


class TransferFailed(UploadError):
    """The PUT got no HTTP answer: refused, reset, TLS failure or no progress."""


# ---- results


@dataclass(frozen=True)
class UploadService:
    """An upload service found through disco, with its advertised limit."""

    jid: JID
    #: ``max-file-size`` from its XEP-0128 form; None if it advertises none.
    max_file_size: int | None


@dataclass(frozen=True)
class Slot:
    """A slot: where to PUT (with which headers) and the GET URL to share."""

    put_url: str
    get_url: str
    #: The allowed headers to send, newlines stripped, in the slot's order.
    headers: tuple[tuple[str, str], ...]
    filename: str
    size: int
    content_type: str | None


class IQRequester(Protocol):
    """What the client needs of a stream: wokkel's IQ request tracking."""

    def request(self, request: generic.Request) -> Deferred[Any]: ...


# ---- pure helpers


def slot_headers(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers a PUT may carry, from a slot's ``(name, value)`` pairs.

    Newlines (CR and LF) are stripped from names and values, names other than
    Authorization, Cookie and Expires (compared case-insensitively) are
    dropped, and the order of what remains is kept (XEP-0363 §4, §8.2).
    """
    kept = []
    for raw_name, raw_value in pairs:
        name = _strip_newlines(raw_name).strip()
        canonical = _ALLOWED.get(name.lower())
        if canonical is None:
            continue
        kept.append((canonical, _strip_newlines(raw_value)))
    return tuple(kept)


def _strip_newlines(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


#: Decimal digits of a number read from a stanza (``max-file-size``): every
#: 64-bit value; longer is refused before ``int()``, whose limit on digits
#: would otherwise raise.
MAX_NUMBER_DIGITS = 20
_DIGITS = re.compile(r"[0-9]+")


def _positive_int(text: str | None) -> int | None:
    """Decimal ASCII digits (no sign, no space, bounded) above zero; else None."""
    if text is None or len(text) > MAX_NUMBER_DIGITS or not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number > 0 else None


def _parse_stamp(value: str | None) -> float | None:
    """An XEP-0082 date-time (a ``<retry stamp>``) as Unix time; else None."""
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except InvalidDateTime:
        return None


_HIDDEN_HTML = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
MAX_SUMMARY = 300


def _body_summary(body: str, content_type: str) -> str:
    """An error body as one short line (an HTML page as its text)."""
    text = body
    if "html" in content_type.lower() or text.lstrip()[:1] == "<":
        text = html.unescape(_TAG.sub(" ", _HIDDEN_HTML.sub(" ", text)))
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUMMARY else line[: MAX_SUMMARY - 1] + "…"


def _without_query(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


def _http_url(url: str | None) -> bool:
    return url is not None and url.lower().startswith(("https://", "http://"))


def parse_slot(
    element: domish.Element, filename: str, size: int, content_type: str | None
) -> Slot:
    """A ``<slot xmlns='urn:xmpp:http:upload:0'>`` as a ``Slot``."""
    put = next(element.elements(NS_UPLOAD, "put"), None)
    get = next(element.elements(NS_UPLOAD, "get"), None)
    put_url = put.getAttribute("url") if put is not None else None
    get_url = get.getAttribute("url") if get is not None else None
    if put is None or put_url is None or not _http_url(put_url):
        raise ProtocolError("the slot has no HTTP(S) PUT URL")
    if get_url is None or not _http_url(get_url):
        raise ProtocolError("the slot has no HTTP(S) GET URL")
    pairs = [
        (header.getAttribute("name") or "", str(header))
        for header in put.elements(NS_UPLOAD, "header")
    ]
    return Slot(
        put_url=_strip_newlines(put_url).strip(),
        get_url=_strip_newlines(get_url).strip(),
        headers=slot_headers(pairs),
        filename=filename,
        size=size,
        content_type=content_type,
    )


def _max_file_size(info: Any) -> int | None:
    form = info.extensions.get(NS_UPLOAD)
    if form is None:
        return None
    field = form.fields.get("max-file-size")
    if field is None:
        return None
    return _positive_int(None if field.value is None else str(field.value))


# ---- XMPP


class _PayloadRequest(generic.Request):
    """An IQ get with one payload element, for wokkel's ``request``."""

    def __init__(
        self,
        recipient: JID,
        payload: domish.Element,
        sender: JID | None,
        timeout: float | None,
    ) -> None:
        super().__init__(recipient=recipient, sender=sender, stanzaType="get")
        self.payload = payload
        self.timeout = timeout

    def toElement(self) -> domish.Element:
        element = super().toElement()
        element.addChild(self.payload)
        return element


# ---- HTTP


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


class _Watchdog:
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


# ---- the client


class UploadClient:
    """XEP-0363 uploads over one wokkel stream.

    ``stream`` is a connected wokkel ``StreamManager`` (a client's, or a
    component's ``Component``), or any handler attached to one. ``sender``
    is the ``from`` of requests: None on a client stream (the server stamps
    it), the component's address (or a user at it) on a component stream.
    ``http`` is the treq ``HTTPClient`` for the PUT; by default one with a
    non-persistent connection pool on ``reactor`` (``tls_policy``, an
    ``IPolicyForHTTPS``, checks HTTPS certificates; twisted.web's default
    checks them against the system's trust roots).
    """

    def __init__(
        self,
        reactor: Any,
        stream: IQRequester,
        *,
        sender: JID | str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        http: HTTPClient | None = None,
        tls_policy: IPolicyForHTTPS | None = None,
    ) -> None:
        self.reactor = reactor
        self.stream = stream
        self.sender = JID(sender) if isinstance(sender, str) else sender
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        if http is None:
            pool = HTTPConnectionPool(reactor, persistent=False)
            if tls_policy is None:
                agent = Agent(reactor, pool=pool)
            else:
                agent = Agent(reactor, contextFactory=tls_policy, pool=pool)
            http = HTTPClient(agent)
        self.http = http
        self._services: dict[str, UploadService] = {}

    # ---- XMPP

    async def _iq(self, what: str, to: JID, payload: domish.Element) -> Any:
        """Send an IQ get; its result element, or a typed error."""
        request = _PayloadRequest(to, payload, self.sender, self.timeout)
        try:
            return await self.stream.request(request)
        except StanzaError as e:
            raise XmppError(
                what, to.full(), e.condition or "undefined-condition", e.type,
                e.text, e.appCondition,
            ) from None  # fmt: skip
        except xmlstream.TimeoutError:
            raise NoAnswer(
                f"{what}: no answer from {to.full()} within {self.timeout:g} s"
            ) from None
        except (ConnectionDone, ConnectionLost) as e:
            raise NoAnswer(
                f"{what}: the XMPP stream closed before {to.full()} answered"
            ) from e

    async def disco_info(self, entity: JID | str) -> Any:
        """wokkel's ``DiscoInfo`` of ``entity``; XmppError if it refuses."""
        to = JID(entity) if isinstance(entity, str) else entity
        query = domish.Element((disco.NS_DISCO_INFO, "query"))
        iq = await self._iq("disco#info", to, query)
        return disco.DiscoInfo.fromElement(_query(iq, disco.NS_DISCO_INFO))

    async def disco_items(self, entity: JID | str) -> list[JID]:
        """The item JIDs in ``entity``'s disco#items, in its order."""
        to = JID(entity) if isinstance(entity, str) else entity
        query = domish.Element((disco.NS_DISCO_ITEMS, "query"))
        iq = await self._iq("disco#items", to, query)
        items = disco.DiscoItems.fromElement(_query(iq, disco.NS_DISCO_ITEMS))
        return [item.entity for item in items if item.entity is not None]

    async def service_info(self, entity: JID | str) -> UploadService | None:
        """``entity`` as an upload service, or None if it does not offer one."""
        to = JID(entity) if isinstance(entity, str) else entity
        info = await self.disco_info(to)
        if NS_UPLOAD not in info.features:
            return None
        return UploadService(jid=to, max_file_size=_max_file_size(info))

    async def discover_all(self, domain: JID | str) -> list[UploadService]:
        """Every upload service ``domain`` lists, in disco#items order.

        disco#items of the domain, then disco#info of every item (all at
        once); items that fail to answer are skipped. If none offers
        ``urn:xmpp:http:upload:0``, the domain itself is asked.
        """
        host = JID(domain) if isinstance(domain, str) else domain
        items = await self.disco_items(host)
        # Dedupe, keeping the server's order.
        unique = list(dict.fromkeys(item for item in items if item != host))
        answers = [ensureDeferred(self._quiet_info(item)) for item in unique]
        found = [service for service in [await d for d in answers] if service]
        if not found:
            own = await self._quiet_info(host)
            if own is not None:
                found.append(own)
        return found

    async def _quiet_info(self, entity: JID) -> UploadService | None:
        try:
            return await self.service_info(entity)
        except UploadError:
            return None

    async def discover(self, domain: JID | str, refresh: bool = False) -> UploadService:
        """The first upload service of ``domain`` (cached); NoUploadService."""
        key = domain if isinstance(domain, str) else domain.full()
        if not refresh and key in self._services:
            return self._services[key]
        found = await self.discover_all(domain)
        if not found:
            raise NoUploadService(key)
        self._services[key] = found[0]
        return found[0]

    async def request_slot(
        self,
        service: UploadService | JID | str,
        filename: str,
        size: int,
        content_type: str | None = None,
    ) -> Slot:
        """Ask ``service`` for a slot; SlotRefused or FileTooLarge if refused."""
        to = _service_jid(service)
        request = domish.Element((NS_UPLOAD, "request"))
        request["filename"] = filename
        request["size"] = str(size)
        if content_type:
            request["content-type"] = content_type
        try:
            iq = await self._iq("slot request", to, request)
        except XmppError as e:
            refused = SlotRefused(
                "slot request", e.entity, e.condition, e.error_type,
                e.server_text, e.app_condition,
            )  # fmt: skip
            if refused.too_large:
                raise FileTooLarge(
                    size, refused.max_file_size, to.full(), refused
                ) from None
            raise refused from None
        slot = next(iq.elements(NS_UPLOAD, "slot"), None)
        if slot is None:
            raise ProtocolError(f"{to.full()} answered a slot request without a slot")
        return parse_slot(slot, filename, size, content_type)

    # ---- HTTP

    async def put(
        self,
        slot: Slot,
        file: BinaryIO,
        progress: ProgressCallback | None = None,
    ) -> None:
        """PUT ``slot.size`` bytes of ``file`` (from its position) to the slot.

        Sends the slot's allowed headers, ``Content-Length`` and
        ``Content-Type`` (the slot's, else ``application/octet-stream``).
        HttpError for a non-2xx answer, TransferFailed when no answer came or
        the transfer stalled for ``idle_timeout`` seconds; a read error of the
        file is raised as is.
        """
        watchdog = _Watchdog(self.reactor, self.idle_timeout)
        total = slot.size

        def on_chunk(sent: int) -> None:
            watchdog.poke()
            if progress is not None:
                progress(sent, total)

        cooperator = task.Cooperator(
            scheduler=lambda work: self.reactor.callLater(0, work)
        )
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
        shown_url = _without_query(slot.put_url)
        try:
            sending = self.http.put(slot.put_url, data=producer, headers=headers)
            watchdog.watch(sending)
            response: IResponse = await sending
            body = await self._error_body(response, watchdog)
        except Exception as e:
            if watchdog.fired:
                raise TransferFailed(
                    f"upload to {shown_url} made no progress for "
                    f"{self.idle_timeout:g} s"
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

    async def _error_body(self, response: IResponse, watchdog: _Watchdog) -> str:
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

    # ---- all of it

    async def upload(
        self,
        path: str | os.PathLike[str],
        *,
        domain: JID | str | None = None,
        service: UploadService | JID | str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> str:
        """Upload the file at ``path``; return its GET URL.

        The service is ``service`` or else the first one ``domain`` lists.
        ``filename`` defaults to the file's own name, ``content_type`` to a
        guess from the name (none if unknown). A file over the service's
        advertised limit is refused with FileTooLarge before the slot request;
        an empty file with UploadError (XEP-0363 sizes are positive).
        OSError if the file cannot be opened or read.
        """
        if service is None and domain is None:
            raise TypeError("upload() needs a domain or a service")
        name = filename if filename is not None else Path(path).name
        if content_type is None:
            content_type = mimetypes.guess_type(name, strict=False)[0]
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size <= 0:
                raise UploadError(f"{name} is empty: there is nothing to upload")
            if service is None:
                assert domain is not None
                service = await self.discover(domain)
            if isinstance(service, UploadService):
                limit = service.max_file_size
                if limit is not None and size > limit:
                    raise FileTooLarge(size, limit, service.jid.full())
            slot = await self.request_slot(service, name, size, content_type)
            await self.put(slot, file, progress)
        return slot.get_url


def _service_jid(service: UploadService | JID | str) -> JID:
    if isinstance(service, UploadService):
        return service.jid
    return JID(service) if isinstance(service, str) else service


def _query(iq: domish.Element, namespace: str) -> domish.Element:
    query = next(iq.elements(namespace, "query"), None)
    if query is None:
        raise ProtocolError(f"{iq.getAttribute('from', '?')} sent no {namespace} query")
    return query


def upload_file(
    reactor: Any,
    stream: IQRequester,
    path: str | os.PathLike[str],
    *,
    domain: JID | str | None = None,
    service: UploadService | JID | str | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Deferred[str]:
    """One upload with a fresh ``UploadClient``; a Deferred of the GET URL.

    ``options`` go to ``UploadClient`` (sender, timeout, idle_timeout, http,
    tls_policy).
    """
    client = UploadClient(reactor, stream, **options)
    return ensureDeferred(
        client.upload(path, domain=domain, service=service, progress=progress)
    )
