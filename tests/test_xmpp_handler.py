"""The XMPP handlers: disco and slot requests, against wokkel's stream stub.

Over 400 lines: every XEP-0363 answer runs on one harness, on the stub and
on the wire; the input rules (test_slot_input) and quotas are split off.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slot_fakes import THREADS, PendingStore, ThreadedStore, WatchedPolicy
from test_component import FakeEndpoint
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish
from wokkel import disco, generic
from wokkel.iwokkel import IDisco
from wokkel.test import helpers
from zope.interface.verify import verifyObject

from httpupload.config import QuotaLimits, QuotasConfig
from httpupload.metadata import MetadataStore
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.xmpp.component import ComponentService
from httpupload.xmpp.handler import UploadHandler, requester_of
from httpupload.xmpp.routing import RoutingXmlStream, route_of
from httpupload.xmpp.stanzas import (
    NAMESPACES,
    NS_UPLOAD,
    NS_UPLOAD_CONVERSATIONS,
    NS_UPLOAD_LEGACY,
    slot_element,
    slot_result_xml,
)

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DATA = "jabber:x:data"
MAX = 5 * 1024 * 1024


STREAM_HEADER = (
    b"<stream:stream xmlns='jabber:component:accept' "
    b"xmlns:stream='http://etherx.jabber.org/streams' "
    b"from='upload.montague.tld' id='sid-1'>"
)


def parse_stanzas(data: bytes) -> list[domish.Element]:
    """The top-level elements a component wrote to its stream."""
    stream = domish.elementStream()
    elements: list[domish.Element] = []
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = elements.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(STREAM_HEADER + data)
    return elements


class Service:
    """The handler set the component runs, on a stub stream or on the wire.

    ``dispatch``: stanzas are dispatched as elements on wokkel's stub (as an
    in-process router does); ``wire``: they arrive as bytes on the component's
    own stream and answers leave as bytes (the path with the IQ routes).
    """

    def __init__(
        self,
        mode: str = "dispatch",
        policy: SlotPolicy | None = None,
        metadata: MetadataStore | None = None,
    ) -> None:
        self.mode = mode
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.signer = SlotSigner(b"k" * 32, self.clock)
        self.handler = UploadHandler(
            policy or SlotPolicy(MAX, ("montague.tld",)),
            self.signer,
            "https://upload.montague.tld/",
            "https://download.montague.tld/files/",
            300,
            metadata=metadata,
        )
        handlers = (generic.FallbackHandler(), disco.DiscoHandler(), self.handler)
        if mode == "wire":
            endpoint = FakeEndpoint()
            self.component = ComponentService(
                self.clock,
                endpoint,
                "upload.montague.tld",
                "secret",
                handlers,
            )
            self.component.startService()
            protocol, self.transport = endpoint.connections[-1]
            assert isinstance(protocol, RoutingXmlStream)
            self.protocol = protocol
            self.protocol.dataReceived(STREAM_HEADER + b"<handshake/>")
            assert self.component.online
            return
        self.manager = helpers.TestableStreamManager(reactor=self.clock)
        for handler in handlers:
            handler.setHandlerParent(self.manager)

    def send(
        self,
        child: domish.Element,
        sender: str = "romeo@montague.tld/garden",
        type: str = "get",
    ) -> domish.Element:
        """Send a request IQ on the stub, without looking for its reply."""
        iq = domish.Element((None, "iq"))
        iq["type"] = type
        iq["id"] = "step_03"
        iq["from"] = sender
        iq["to"] = "upload.montague.tld"
        iq.addChild(child)
        self.manager.stub.send(iq)
        return iq

    def ask(
        self,
        child: domish.Element,
        sender: str = "romeo@montague.tld/garden",
        type: str = "get",
    ) -> domish.Element:
        iq = domish.Element((None, "iq"))
        iq["type"] = type
        iq["id"] = "step_03"
        iq["from"] = sender
        iq["to"] = "upload.montague.tld"
        iq.addChild(child)
        if self.mode == "wire":
            self.transport.clear()
            self.protocol.dataReceived(iq.toXml().encode("utf-8"))
            output = parse_stanzas(self.transport.value())
            assert len(output) == 1, "exactly one reply"
            reply = output[0]
        else:
            output = self.manager.stub.output
            before = len(output)
            self.manager.stub.send(iq)
            assert len(output) == before + 1, "exactly one reply"
            reply = output[-1]
        assert reply["id"] == "step_03"
        assert reply.getAttribute("to") == (sender or None)
        return reply


def request(**attributes: str) -> domish.Element:
    element = domish.Element((NS_UPLOAD, "request"))
    for name, value in attributes.items():
        element[name.replace("_", "-")] = value
    return element


def error_of(reply: domish.Element) -> tuple[str, str, str | None]:
    assert reply["type"] == "error"
    error = reply.error
    condition = next(
        c.name for c in error.elements() if c.uri == NS_STANZAS and c.name != "text"
    )
    text = next((str(c) for c in error.elements() if c.name == "text"), None)
    return error["type"], condition, text


@pytest.fixture(params=["dispatch", "wire"])
def service(request: pytest.FixtureRequest) -> Service:
    return Service(request.param)


def test_disco_info(service: Service) -> None:
    """disco#info: store/file identity, the features, and max-file-size in a form."""
    reply = service.ask(domish.Element((disco.NS_DISCO_INFO, "query")))
    assert reply["type"] == "result"
    identities = [
        (i["category"], i["type"], i.getAttribute("name"))
        for i in reply.query.elements(disco.NS_DISCO_INFO, "identity")
    ]
    assert identities == [("store", "file", "HTTP File Upload")]
    features = {f["var"] for f in reply.query.elements(disco.NS_DISCO_INFO, "feature")}
    assert {*NAMESPACES, disco.NS_DISCO_INFO} <= features
    forms = {}
    for form in reply.query.elements(NS_DATA, "x"):
        assert form["type"] == "result"
        fields = {f["var"]: str(f.value) for f in form.elements(NS_DATA, "field")}
        forms[fields.pop("FORM_TYPE")] = fields
    # One form per namespace, each with the limit (XEP-0128: one per FORM_TYPE).
    assert forms == {ns: {"max-file-size": str(MAX)} for ns in NAMESPACES}


def test_disco_items_empty(service: Service) -> None:
    """disco#items answers with an empty list."""
    reply = service.ask(domish.Element((disco.NS_DISCO_ITEMS, "query")))
    assert reply["type"] == "result"
    assert list(reply.query.elements()) == []


def test_slot(service: Service) -> None:
    """A valid request gets a PUT URL with an Authorization header and a GET URL."""
    reply = service.ask(
        request(filename="très cool.jpg", size="23456", content_type="image/jpeg")
    )
    assert reply["type"] == "result"
    slot = reply.slot
    assert slot.uri == NS_UPLOAD
    put_url, get_url = slot.put["url"], slot.get["url"]
    assert put_url.startswith("https://upload.montague.tld/")
    assert urlsplit(put_url).path.endswith("/tr%C3%A8s%20cool.jpg")
    assert get_url.startswith("https://download.montague.tld/files/")
    file_id = urlsplit(put_url).path.split("/")[1]
    assert len(file_id) >= 22
    assert urlsplit(get_url).path.split("/")[-2] == file_id
    (header,) = list(slot.put.elements(NS_UPLOAD, "header"))
    assert header["name"] == "Authorization"
    scheme, token = str(header).split(" ")
    assert scheme == "Bearer"
    granted = service.signer.verify(token, file_id, "très cool.jpg")
    assert (granted.size, granted.content_type, granted.owner) == (
        23456,
        "image/jpeg",
        "romeo@montague.tld",
    )
    assert granted.expires == 1_700_000_000 + 300
    # The same token rides in the PUT URL, for clients that drop headers.
    assert urlsplit(put_url).query == f"token={token}"


def test_each_slot_is_new(service: Service) -> None:
    """Two requests for the same name get different URLs."""
    urls = {
        service.ask(request(filename="a.txt", size="1")).slot.get["url"]
        for _ in range(5)
    }
    assert len(urls) == 5


def test_empty_content_type_counts_as_absent(service: Service) -> None:
    """Converse.js sends content-type='' for unknown extensions."""
    reply = service.ask(request(filename="x.unknownext", size="10", content_type=""))
    assert reply["type"] == "result"
    token = str(next(reply.slot.put.elements(NS_UPLOAD, "header"))).split(" ")[1]
    assert service.signer.decode(token).content_type is None


def test_file_too_large(service: Service) -> None:
    """Over the limit: modify/not-acceptable, file-too-large, the request echoed."""
    reply = service.ask(
        request(filename="big.iso", size=str(MAX + 1), content_type="image/jpeg")
    )
    assert error_of(reply)[:2] == ("modify", "not-acceptable")
    assert str(MAX) in (error_of(reply)[2] or "")
    (too_large,) = list(reply.error.elements(NS_UPLOAD, "file-too-large"))
    assert str(too_large.firstChildElement()) == str(MAX)
    assert too_large.firstChildElement().name == "max-file-size"
    echoed = reply.request
    assert (echoed.uri, echoed["filename"], echoed["size"]) == (
        NS_UPLOAD,
        "big.iso",
        str(MAX + 1),
    )


def test_exactly_the_limit(service: Service) -> None:
    """A file of exactly max-file-size bytes is allowed."""
    assert service.ask(request(filename="a", size=str(MAX)))["type"] == "result"


@pytest.mark.parametrize(
    ("attributes", "mentions"),
    [
        ({"size": "10"}, "filename"),
        ({"filename": "", "size": "10"}, "filename"),
        ({"filename": "..", "size": "10"}, "filename"),
        ({"filename": "a/b.txt", "size": "10"}, "filename"),
        ({"filename": "a\\b.txt", "size": "10"}, "filename"),
        ({"filename": "a\x01.txt", "size": "10"}, "filename"),
        ({"filename": "a" * 256, "size": "10"}, "filename"),
        ({"filename": "a.txt"}, "size"),
        ({"filename": "a.txt", "size": ""}, "size"),
        ({"filename": "a.txt", "size": "0"}, "size"),
        ({"filename": "a.txt", "size": "-5"}, "size"),
        ({"filename": "a.txt", "size": "1.5"}, "size"),
        ({"filename": "a.txt", "size": "ten"}, "size"),
        ({"filename": "a.txt", "size": "١٢"}, "size"),
        ({"filename": "a.txt", "size": "3", "content_type": "bad"}, "content-type"),
    ],
)
def test_bad_requests(
    service: Service, attributes: dict[str, str], mentions: str
) -> None:
    """Each malformed request: modify/bad-request, a text naming the attribute, echo."""
    if service.mode == "wire" and "\x01" in attributes.get("filename", ""):
        pytest.skip("an XML 1.0 stream cannot carry U+0001")
    reply = service.ask(request(**attributes))
    error_type, condition, text = error_of(reply)
    assert (error_type, condition) == ("modify", "bad-request")
    assert text is not None and mentions in text
    assert reply.request is not None and reply.request.uri == NS_UPLOAD


@pytest.mark.parametrize(
    "sender", ["mallory@evil.example/x", "montague.tld", "upload.montague.tld"]
)
def test_forbidden(service: Service, sender: str) -> None:
    """Requesters outside [access] domains: auth/forbidden with a text, echoed."""
    reply = service.ask(request(filename="a.txt", size="3"), sender=sender)
    error_type, condition, text = error_of(reply)
    assert (error_type, condition) == ("auth", "forbidden")
    assert text
    assert reply.request is not None


def test_size_with_plus_sign_is_refused(service: Service) -> None:
    """A size is decimal digits only: a leading '+' gets bad-request."""
    reply = service.ask(request(filename="a", size="+12"))
    assert error_of(reply)[:2] == ("modify", "bad-request")


def test_request_as_set(service: Service) -> None:
    """A slot request sent as IQ set gets bad-request, not silence."""
    reply = service.ask(request(filename="a", size="1"), type="set")
    assert error_of(reply)[:2] == ("modify", "bad-request")


def test_unknown_iq_gets_service_unavailable(service: Service) -> None:
    """Any other IQ get or set is answered with service-unavailable."""
    reply = service.ask(domish.Element(("urn:example:unknown", "query")))
    assert error_of(reply)[1] == "service-unavailable"


def legacy_request(namespace: str, **children: str) -> domish.Element:
    element = domish.Element((namespace, "request"))
    for name, value in children.items():
        element.addElement(name.replace("_", "-"), content=value)
    return element


@pytest.mark.parametrize("namespace", [NS_UPLOAD_LEGACY, NS_UPLOAD_CONVERSATIONS])
def test_legacy_slot(service: Service, namespace: str) -> None:
    """The 0.2 and Conversations formats: child elements in, URLs as text out."""
    reply = service.ask(
        legacy_request(
            namespace, filename="très cool.jpg", size="42", content_type="image/jpeg"
        )
    )
    assert reply["type"] == "result"
    slot = reply.slot
    assert slot.uri == namespace
    put_url, get_url = str(slot.put), str(slot.get)
    assert not list(slot.put.elements())  # no headers in these formats
    parts = urlsplit(put_url)
    assert parts.path.endswith("/tr%C3%A8s%20cool.jpg")
    assert get_url.endswith(parts.path.split("/", 2)[-1])
    token = parts.query.removeprefix("token=")
    granted = service.signer.verify(token, parts.path.split("/")[1], "très cool.jpg")
    assert (granted.size, granted.content_type) == (42, "image/jpeg")


@pytest.mark.parametrize("namespace", [NS_UPLOAD_LEGACY, NS_UPLOAD_CONVERSATIONS])
def test_legacy_errors(service: Service, namespace: str) -> None:
    """Legacy requests get the same conditions, file-too-large in their namespace."""
    reply = service.ask(
        legacy_request(namespace, filename="big.iso", size=str(MAX + 1))
    )
    assert error_of(reply)[:2] == ("modify", "not-acceptable")
    (too_large,) = list(reply.error.elements(namespace, "file-too-large"))
    assert str(too_large.firstChildElement()) == str(MAX)
    assert reply.request.uri == namespace

    reply = service.ask(legacy_request(namespace, size="10"))
    assert error_of(reply)[:2] == ("modify", "bad-request")
    reply = service.ask(legacy_request(namespace, filename="a", size="x"))
    assert error_of(reply)[:2] == ("modify", "bad-request")
    reply = service.ask(
        legacy_request(namespace, filename="a", size="1"), sender="eve@evil.example/x"
    )
    assert error_of(reply)[:2] == ("auth", "forbidden")


def canonical(element: domish.Element) -> tuple[object, ...]:
    """An element as nested tuples: names, namespaces, attributes, text."""
    return (
        element.name,
        element.uri,
        sorted(element.attributes.items()),
        [
            canonical(c) if isinstance(c, domish.Element) else str(c)
            for c in element.children
        ],
    )


XML_TEXT = st.text(
    st.characters(
        min_codepoint=0x20,
        exclude_categories=["Cs"],
        exclude_characters="\ufffe\uffff",
    )
)


@settings(max_examples=200, deadline=None)
@given(
    namespace=st.sampled_from(NAMESPACES),
    put_url=XML_TEXT,
    get_url=XML_TEXT,
    headers=st.dictionaries(XML_TEXT.filter(bool), XML_TEXT, max_size=3),
    addressing=st.fixed_dictionaries(
        {}, optional={"from": XML_TEXT, "to": XML_TEXT, "id": XML_TEXT}
    ),
)
def test_slot_result_text_is_the_domish_answer(
    namespace: str,
    put_url: str,
    get_url: str,
    headers: dict[str, str],
    addressing: dict[str, str],
) -> None:
    """The slot answer written as text parses to what domish would have sent."""
    iq = domish.Element((None, "iq"))
    iq["type"] = "get"
    for name, value in addressing.items():
        iq[name] = value
    expected = toResponse(iq, "result")
    expected.addChild(slot_element(namespace, put_url, get_url, headers))
    (written,) = parse_stanzas(
        slot_result_xml(iq, namespace, put_url, get_url, headers).encode("utf-8")
    )
    (serialized,) = parse_stanzas(expected.toXml().encode("utf-8"))
    assert canonical(written) == canonical(serialized)


def test_routed_requests_skip_other_observers() -> None:
    """On the component's stream a slot request reaches only the upload handler."""
    service = Service("wire")
    seen: list[domish.Element] = []
    service.protocol.addObserver("/iq", seen.append, priority=100)
    reply = service.ask(request(filename="a.txt", size="3"))
    assert reply.slot is not None
    assert seen == []
    # Anything else still goes through XPath dispatch.
    service.ask(domish.Element((disco.NS_DISCO_INFO, "query")))
    assert len(seen) == 1


def test_iq_with_two_payloads_takes_the_xpath_path() -> None:
    """An IQ that is not a plain request is left to the observers, as before."""
    iq = domish.Element((None, "iq"))
    iq["type"] = "get"
    iq.addChild(request(filename="a.txt", size="3"))
    assert route_of(iq) == ("get", NS_UPLOAD, "request")
    iq.addElement(("urn:example", "other"))
    assert route_of(iq) is None
    assert route_of(domish.Element((None, "iq"))) is None


@pytest.mark.parametrize(
    "sender", ["", "@montague.tld/x", "romeo@/x", "/garden", "romeo@montague..tld/x"]
)
def test_invalid_sender_is_forbidden(service: Service, sender: str) -> None:
    """A request without a usable sender JID is refused as forbidden."""
    reply = service.ask(request(filename="a.txt", size="3"), sender=sender)
    assert error_of(reply)[:2] == ("auth", "forbidden")


def test_requester_is_the_bare_jid() -> None:
    """Only the bare JID counts; the resource is not parsed (the server checked it)."""
    iq = domish.Element((None, "iq"))
    iq["from"] = "Romeo@Montague.TLD/garden/with@sign"
    jid = requester_of(iq)
    assert jid is not None and jid.full() == "romeo@montague.tld"
    iq["from"] = "montague.tld/x@y"
    jid = requester_of(iq)
    assert jid is not None and (jid.user, jid.host) == (None, "montague.tld")


def test_slot_log_keeps_the_file_id_out(service: Service) -> None:
    """The granted slot's log event carries six characters of its id, in every field."""
    with capturedLogs() as events:
        reply = service.ask(request(filename="a.txt", size="3"))
    file_id = urlsplit(reply.slot.get["url"]).path.split("/")[-2]
    (event,) = [e for e in events if e.get("log_format", "").startswith("Slot ")]
    assert formatEvent(event).startswith(f"Slot {file_id[:6]}… for romeo@montague.tld")
    assert all(file_id not in str(value) for value in event.values())


def test_upload_handler_provides_idisco() -> None:
    """The upload handler provides IDisco: both methods, with the right arity."""
    assert verifyObject(IDisco, Service().handler)


def test_reply_waits_for_the_slots_record() -> None:
    """With no quota to decide, the slot still goes out only once its record is
    in the store, so its PUT finds it (no reliance on the store's FIFO order)."""
    store = PendingStore()
    service = Service(metadata=store)
    output = service.manager.stub.output
    service.send(request(filename="a.txt", size="3"))
    assert output == []
    (finish,) = store.pending
    finish()
    (reply,) = output
    assert reply["type"] == "result"
    file_id = urlsplit(reply.slot.get["url"]).path.split("/")[-2]
    assert file_id in store.records


def test_quota_rule_never_runs_on_the_stores_thread() -> None:
    """A store that checks on its own thread: the quota rule (SlotPolicy.check_quota)
    runs on the reactor's thread only; the refusal is the XEP's, with its stamp."""
    policy = WatchedPolicy(
        MAX,
        ("montague.tld",),
        quotas=QuotasConfig(window=86400, user=QuotaLimits(files_per_window=1)),
    )
    service = Service(policy=policy, metadata=ThreadedStore())
    del THREADS[:]
    assert service.ask(request(filename="a.txt", size="3"))["type"] == "result"
    reply = service.ask(request(filename="a.txt", size="3"))
    assert error_of(reply)[:2] == ("wait", "resource-constraint")
    assert THREADS == [threading.current_thread()]
