"""The XEP-0363 handler: disco#info with the size limit, and slot requests.

Parse (``stanzas``), grant (``httpupload.granting``), render (``stanzas``):
the handler decides nothing about a slot itself.
"""

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
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from httpupload.errors import SlotRequestError
from httpupload.granting import PresignedUrls, SlotGrant, SlotGranter
from httpupload.logs import short_id
from httpupload.metadata import MetadataStore
from httpupload.metrics import Metrics
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner, SlotUrls
from httpupload.xmpp.routing import RoutingXmlStream
from httpupload.xmpp.stanzas import (
    NAMESPACES,
    NS_PURPOSE,
    NS_UPLOAD,
    find_request,
    parse_request,
    slot_element,
    slot_result_xml,
    stanza_error,
)


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
class SlotHandler(XMPPHandler):
    """Answers slot requests and describes the service in disco#info.

    Each slot request IQ is parsed (``stanzas``), granted (``SlotGranter``)
    and rendered (``stanzas``), and leaves through one exit, the shape of
    wokkel's ``IQHandlerMixin``: a result, or a failure translated once: a
    ``SlotRequestError`` to the XEP's error, a ``StanzaError`` as it is,
    anything else logged and answered ``internal-server-error``.  The routed
    fast path (``httpupload.xmpp.routing``) and XPath dispatch share it.
    """

    def __init__(self, granter: SlotGranter, metrics: Metrics | None = None) -> None:
        super().__init__()
        self.granter = granter
        self.policy = granter.policy
        self.metrics = metrics
        self._disco_info: list[object] | None = None

    def connectionInitialized(self) -> None:
        stream = self.xmlstream
        stream.addObserver(REQUEST_GET, self._observed)
        stream.addObserver(REQUEST_SET, self._observed_set)
        # On the component's own stream, slot requests skip XPath dispatch and
        # their answers domish's serializer (see httpupload.xmpp.routing).
        if isinstance(stream, RoutingXmlStream):
            for namespace in NAMESPACES:
                stream.route_iq("get", namespace, "request", self._routed)

    def _observed(self, iq: domish.Element) -> None:
        self.answer(iq, as_text=False)

    def _routed(self, iq: domish.Element) -> None:
        self.answer(iq, as_text=True)

    def _observed_set(self, iq: domish.Element) -> None:
        iq.handled = True  # type: ignore[attr-defined]  # the fallback reads it
        self._send_error(
            Failure(
                StanzaError(
                    "bad-request", "modify", "Slot requests are IQ get, not set"
                )
            ),
            iq,
            NS_UPLOAD,
        )

    def answer(self, iq: domish.Element, as_text: bool = False) -> None:
        """Answer one slot request IQ (``get``): a slot, or the XEP's error.

        ``as_text``: send the answer as serialized XML, for a stream that
        writes to a socket; otherwise as a domish element, for streams that
        hand elements on (an in-process router, test stubs).
        """
        iq.handled = True  # type: ignore[attr-defined]  # the fallback reads it
        element = find_request(iq)
        assert element is not None  # the route or the XPath matched it
        d = ensureDeferred(
            self.granter.grant(
                requester_of(iq), lambda now: parse_request(element, now)
            )
        )
        d.addCallbacks(
            self._send_slot,
            self._send_error,
            callbackArgs=(iq, element.uri, as_text),
            errbackArgs=(iq, element.uri),
        )

    def _send_slot(
        self, grant: SlotGrant, iq: domish.Element, namespace: str, as_text: bool
    ) -> None:
        if self.metrics is not None:
            self.metrics.slot_granted()
        slot = grant.slot
        log.info(
            "Slot {file_id} for {owner}: {size} bytes ({purpose})",
            # Six characters: the whole id is half a GET URL, and JSON logs
            # carry every field as given.
            file_id=short_id(slot.file_id),
            owner=slot.owner,
            size=slot.size,
            purpose=grant.purpose,
        )
        answer = (namespace, grant.put_url, grant.get_url, grant.put_headers)
        if as_text:
            self.send(slot_result_xml(iq, *answer))
            return
        response = toResponse(iq, "result")
        response.addChild(slot_element(*answer))
        self.send(response)

    def _send_error(self, failure: Failure, iq: domish.Element, namespace: str) -> None:
        """The one error exit: every failure of a slot request ends here."""
        error = failure.value
        if isinstance(error, SlotRequestError):
            requester = requester_of(iq)
            log.info(
                "Slot refused to {requester}: {reason}",
                requester=requester.userhost() if requester else None,
                reason=error.text,
            )
            if self.metrics is not None:
                self.metrics.slot_refused(error)
            self.send(stanza_error(error, namespace).toResponse(iq))
            return
        if isinstance(error, StanzaError):
            self.send(error.toResponse(iq))
            return
        log.failure("Answering a slot request failed", failure)
        self.send(StanzaError("internal-server-error").toResponse(iq))

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


class UploadHandler(SlotHandler):
    """``SlotHandler`` built from its parts: the constructor embedders call."""

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
        direct_urls: PresignedUrls | None = None,
    ) -> None:
        """As ``SlotGranter``'s arguments; ``direct_urls``: S3 direct mode."""
        granter = SlotGranter(
            policy,
            signer,
            SlotUrls(put_base_url, get_base_url),
            slot_lifetime,
            metadata=metadata,
            free_space=free_space,
            presigned=direct_urls,
        )
        super().__init__(granter, metrics)
