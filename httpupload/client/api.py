"""An XEP-0363 client for Twisted: find the upload service, get a slot, PUT a file.

Works over any connected wokkel stream: a client's or a component's
``StreamManager`` (or an ``XMPPHandler`` attached to one), anything with
wokkel's ``request(generic.Request) -> Deferred``. The errors are in
``httpupload.client.errors``, the reading of answers in
``httpupload.client.parsing``, the PUT in ``httpupload.client.transfer``.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import disco, generic

from httpupload.client.errors import (
    FileTooLarge,
    NoAnswer,
    NoUploadService,
    ProtocolError,
    SlotRefused,
    UploadError,
    XmppError,
)
from httpupload.client.parsing import (
    Slot,
    UploadService,
    max_file_size,
    parse_slot,
    query_of,
)
from httpupload.client.transfer import ProgressCallback, put_file
from httpupload.client.xep import NS_UPLOAD

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "IQRequester",
    "UploadClient",
    "upload_file",
]

#: Seconds to wait for an IQ answer (disco, slot request).
DEFAULT_TIMEOUT = 30.0
#: Seconds a PUT may make no progress (nothing sent, or no answer after the
#: body) before it is given up.
DEFAULT_IDLE_TIMEOUT = 60.0


class IQRequester(Protocol):
    """What the client needs of a stream: wokkel's IQ request tracking."""

    def request(self, request: generic.Request) -> Deferred[Any]: ...


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
        element: domish.Element = super().toElement()
        element.addChild(self.payload)
        return element


class UploadClient:
    """XEP-0363 uploads over one wokkel stream.

    ``stream`` is a connected wokkel ``StreamManager`` (a client's, or a
    component's ``Component``), or any handler attached to one. ``sender``
    is the ``from`` of requests: None on a client stream (the server stamps
    it), the component's address (or a user at it) on a component stream.
    ``http`` is the treq ``HTTPClient`` for the PUT; by default one with a
    non-persistent connection pool on ``reactor`` (``tls_policy``, an
    ``IPolicyForHTTPS``, checks HTTPS certificates; twisted.web's default
    checks them against the system's trust roots). ``reactor`` times the
    PUT (``IReactorTime``); the default ``http`` also connects with it, so
    it must then be a full reactor (``IReactorTCP``, and ``IReactorSSL``
    for HTTPS).
    """

    def __init__(
        self,
        reactor: IReactorTime,
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
        return disco.DiscoInfo.fromElement(query_of(iq, disco.NS_DISCO_INFO))

    async def disco_items(self, entity: JID | str) -> list[JID]:
        """The item JIDs in ``entity``'s disco#items, in its order."""
        to = JID(entity) if isinstance(entity, str) else entity
        query = domish.Element((disco.NS_DISCO_ITEMS, "query"))
        iq = await self._iq("disco#items", to, query)
        items = disco.DiscoItems.fromElement(query_of(iq, disco.NS_DISCO_ITEMS))
        return [item.entity for item in items if item.entity is not None]

    async def service_info(self, entity: JID | str) -> UploadService | None:
        """``entity`` as an upload service, or None if it does not offer one."""
        to = JID(entity) if isinstance(entity, str) else entity
        info = await self.disco_info(to)
        if NS_UPLOAD not in info.features:
            return None
        return UploadService(jid=to, max_file_size=max_file_size(info))

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
        await put_file(self.reactor, self.http, slot, file, progress, self.idle_timeout)

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


def upload_file(
    reactor: IReactorTime,
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
