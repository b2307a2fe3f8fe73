"""The XEP-0363 handler: disco#info with the size limit, and slot requests."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.iwokkel import IDisco
from wokkel.subprotocols import IQHandlerMixin, XMPPHandler
from zope.interface import implementer

from httpupload.direct import DirectUrls
from httpupload.errors import SlotRequestError
from httpupload.logs import short_id
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metrics import Metrics
from httpupload.policy import SlotPolicy
from httpupload.slots import Slot, SlotSigner
from httpupload.web.uploads import TOKEN_PARAMETER
from httpupload.xmpp.stanzas import (
    NAMESPACES,
    NS_PURPOSE,
    SlotRequest,
    find_request,
    parse_request,
    slot_element,
    slot_result_xml,
    stanza_error,
)

# A slot's answer: namespace, PUT URL, GET URL, PUT headers.
_SlotAnswer = tuple[str, str, str, dict[str, str]]


def _requests(iq_type: str) -> str:
    either = " or ".join(f"@xmlns='{ns}'" for ns in NAMESPACES)
    return f"/iq[@type='{iq_type}']/request[{either}]"


REQUEST_GET = _requests("get")
REQUEST_SET = _requests("set")

log = Logger()


@lru_cache(maxsize=4096)
def _bare_jid(bare: str) -> JID | None:
    try:
        return JID(bare)
    except (InvalidFormat, IndexError):
        # twisted's parser raises IndexError for an empty domain label ("a@x..y").
        return None


def requester_of(iq: domish.Element) -> JID | None:
    """The bare JID an IQ is from; None if it has none or an invalid one.

    Only the bare JID matters to the policy, and the server has checked the
    full one; stringprep of the same few thousand users for every request
    cost more than the rest of the request's parsing, so it is cached.
    """
    sender = iq.getAttribute("from")
    bare = sender.partition("/")[0] if sender else ""
    if not bare:  # (JID("") raises RuntimeError)
        return None
    return _bare_jid(bare)


@implementer(IDisco)
class UploadHandler(XMPPHandler, IQHandlerMixin):
    """Answers slot requests and describes the service in disco#info."""

    iqHandlers = {REQUEST_SET: "on_request_set"}

    def __init__(
        self,
        policy: SlotPolicy,
        signer: SlotSigner,
        put_base_url: str,
        get_base_url: str,
        slot_lifetime: int,
        metadata: MetadataStore | None = None,
        free_space: Callable[[], Deferred[int | None]] | None = None,
        metrics: Metrics | None = None,
        direct_urls: DirectUrls | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.signer = signer
        self.put_base_url = put_base_url
        self.get_base_url = get_base_url
        self.slot_lifetime = slot_lifetime
        # Without a metadata store (a bare embedding) there are no quotas.
        self.metadata = metadata
        self.free_space = free_space
        self.metrics = metrics
        # S3 direct mode: the PUT goes to a presigned URL, the GET to a
        # public base, neither through httpupload.
        self.direct_urls = direct_urls
        self._disco_info: list[object] | None = None

    def connectionInitialized(self) -> None:
        stream = self.xmlstream
        stream.addObserver(REQUEST_GET, self._observed)
        stream.addObserver(REQUEST_SET, self.handleRequest)
        # On the component's own stream, slot requests skip XPath dispatch and
        # their answers domish's serializer (see httpupload.xmpp.routing).
        route = getattr(stream, "route_iq", None)
        if route is not None:
            for namespace in NAMESPACES:
                route("get", namespace, "request", self._routed)

    def _observed(self, iq: domish.Element) -> None:
        self.answer(iq, as_text=False)

    def _routed(self, iq: domish.Element) -> None:
        self.answer(iq, as_text=True)

    def answer(self, iq: domish.Element, as_text: bool = False) -> None:
        """Answer one slot request IQ (``get``): a slot, or the XEP's error.

        ``as_text``: send the answer as serialized XML, for a stream that
        writes to a socket; otherwise as a domish element, for streams that
        hand elements on (an in-process router, test stubs).
        """
        iq.handled = True  # type: ignore[attr-defined]  # the fallback reads it
        d = ensureDeferred(self._slot(iq))
        d.addCallbacks(
            self._send_slot,
            self._send_error,
            callbackArgs=(iq, as_text),
            errbackArgs=(iq,),
        )

    def _send_slot(self, slot: _SlotAnswer, iq: domish.Element, as_text: bool) -> None:
        if as_text:
            self.send(slot_result_xml(iq, *slot))
            return
        response = toResponse(iq, "result")
        response.addChild(slot_element(*slot))
        self.send(response)

    def _send_error(self, failure: Failure, iq: domish.Element) -> None:
        if failure.check(StanzaError):
            self.send(failure.value.toResponse(iq))
            return
        log.failure("Answering a slot request failed", failure)
        self.send(StanzaError("internal-server-error").toResponse(iq))

    async def _slot(self, iq: domish.Element) -> _SlotAnswer:
        requester = requester_of(iq)
        element = find_request(iq)
        assert element is not None  # the route or the XPath matched it
        now = self.signer.clock.seconds()
        try:
            owner = self.policy.check_requester(requester)
            request = parse_request(element, now)
            self.policy.purpose_config(request.purpose)
            self.policy.check_type(request.content_type)
            self.policy.check_size(request.size, request.purpose)
            slot, token = self.signer.mint(
                request.filename,
                request.size,
                request.content_type,
                owner,
                self.slot_lifetime,
            )
            await self._reserve(slot, request, now)
        except SlotRequestError as e:
            log.info(
                "Slot refused to {requester}: {reason}",
                requester=requester.userhost() if requester else None,
                reason=e.text,
            )
            if self.metrics is not None:
                self.metrics.slot_refused(e)
            raise stanza_error(e, element.uri) from None
        if self.metrics is not None:
            self.metrics.slot_granted()
        log.info(
            "Slot {file_id} for {owner}: {size} bytes ({purpose})",
            # Six characters: the whole id is half a GET URL, and JSON logs
            # carry every field as given.
            file_id=short_id(slot.file_id),
            owner=owner,
            size=slot.size,
            purpose=request.purpose,
        )
        if self.direct_urls is not None:
            put_url, get_url = await self.direct_urls.urls(slot, self.slot_lifetime)
            # The presigned URL binds Content-Length and Content-Type, which
            # clients send anyway; XEP-0363 allows neither as a slot header.
            return (element.uri, put_url, get_url, {})
        # The token rides in the PUT URL too, for clients (and namespaces)
        # that cannot send slot headers.
        return (
            element.uri,
            f"{self.put_base_url}{slot.path}?{TOKEN_PARAMETER}={token}",
            self.get_base_url + slot.path,
            {"Authorization": f"Bearer {token}"},
        )

    async def _reserve(self, slot: Slot, request: SlotRequest, now: float) -> None:
        """Record the slot, reserving its size, if quotas allow (atomically)."""
        if self.metadata is None:
            return
        if self.free_space is not None:
            self.policy.check_free_space(await self.free_space(), request.size)
        record = FileRecord(
            file_id=slot.file_id,
            owner=slot.owner,
            filename=slot.filename,
            size=slot.size,
            content_type=slot.content_type,
            purpose=request.purpose,
            created=now,
            slot_expires=slot.expires,
            expires=self.policy.expiry(request.purpose, now, request.expire_before),
        )
        policy = self.policy
        needs = policy.usage_needs(request.purpose)
        reserving = self.metadata.reserve(
            record,
            policy.quotas.window,
            lambda usage: policy.check_quota(usage, request.size, request.purpose),
            needs,
        )
        if needs.window or needs.held or needs.global_bytes:
            await reserving  # a quota decides: wait for its answer
        elif getattr(self.metadata, "ordered", False):
            # Nothing to decide, and the store applies operations in the order
            # they were asked for, so the record is in before this slot's PUT
            # can complete it: answer now, without a round trip to its thread.
            reserving.addErrback(
                lambda f: log.failure(
                    "Recording slot {id:.6}… failed", f, id=slot.file_id
                )
            )
        else:
            await reserving

    def on_request_set(self, iq: domish.Element) -> None:
        raise StanzaError("bad-request", "modify", "Slot requests are IQ get, not set")

    def getDiscoInfo(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[object]:
        if nodeIdentifier:
            return []
        if self._disco_info is None:  # the policy is frozen: built once
            self._disco_info = self._build_disco_info()
        return self._disco_info

    def _build_disco_info(self) -> list[object]:
        info: list[object] = [
            disco.DiscoIdentity("store", "file", "HTTP File Upload"),
            disco.DiscoFeature(disco.NS_DISCO_INFO),
            disco.DiscoFeature(disco.NS_DISCO_ITEMS),
        ]
        for namespace in NAMESPACES:
            form = data_form.Form("result", formNamespace=namespace)
            form.addField(
                data_form.Field(
                    var="max-file-size", value=str(self.policy.max_file_size)
                )
            )
            info += [disco.DiscoFeature(namespace), form]
        for purpose in self.policy.enabled_purposes():
            info.append(disco.DiscoFeature(f"{NS_PURPOSE}#{purpose}"))
        return info

    def getDiscoItems(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[object]:
        return []
