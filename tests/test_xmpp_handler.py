"""The XMPP handlers: disco and slot requests, against wokkel's stream stub."""

from urllib.parse import urlsplit

import pytest
from twisted.internet.task import Clock
from twisted.words.xish import domish
from wokkel import disco, generic
from wokkel.test import helpers

from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.stanzas import (
    NAMESPACES,
    NS_UPLOAD,
    NS_UPLOAD_CONVERSATIONS,
    NS_UPLOAD_LEGACY,
)

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DATA = "jabber:x:data"
MAX = 5 * 1024 * 1024


class Service:
    """The handler set the component runs, on a stub stream."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.signer = SlotSigner(b"k" * 32, self.clock)
        self.manager = helpers.TestableStreamManager(reactor=self.clock)
        for handler in (
            generic.FallbackHandler(),
            disco.DiscoHandler(),
            UploadHandler(
                SlotPolicy(MAX, ("montague.tld",)),
                self.signer,
                "https://upload.montague.tld/",
                "https://download.montague.tld/files/",
                300,
            ),
        ):
            handler.setHandlerParent(self.manager)

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
        output = self.manager.stub.output
        before = len(output)
        self.manager.stub.send(iq)
        assert len(output) == before + 1, "exactly one reply"
        reply = output[-1]
        assert reply["id"] == "step_03"
        assert reply["to"] == sender
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


@pytest.fixture
def service() -> Service:
    return Service()


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
    assert str(MAX) in error_of(reply)[2]
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


def test_size_with_plus_sign(service: Service) -> None:
    """xs:positiveInteger allows a leading '+'."""
    assert service.ask(request(filename="a", size="+12"))["type"] == "result"


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
