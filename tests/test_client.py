"""The Twisted client API (httpupload.client), all in memory.

XMPP: a wokkel ``Router`` with our ``UploadHandler`` as an
``InternalComponent``, and a client ``StreamManager`` on an ``XmlPipe`` (with
a stand-in for the user's server answering disco#items of the domain); the
client sends as ``romeo@example.org/phone``, as a component would. HTTP: our
own ``UploadSite`` (``httpupload.testing``), or a recording ``twisted.web``
site where the test needs to see the request, reached through twisted.web's
``Agent`` over iosim. One ``MemoryReactorClock`` runs all of it: no socket,
no thread, no wall clock.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from twisted.words.xish.utility import EventDispatcher
from twisted.words.xish.xmlstream import BootstrapMixin
from wokkel import component, data_form, disco, generic
from wokkel.generic import XmlPipe
from wokkel.iwokkel import IDisco
from wokkel.subprotocols import IQHandlerMixin, StreamManager, XMPPHandler
from zope.interface import implementer

from httpupload import SlotPolicy, UploadHandler
from httpupload.client import (
    ALLOWED_HEADERS,
    NS_UPLOAD,
    FileProducer,
    FileTooLarge,
    HttpError,
    NoAnswer,
    NoUploadService,
    ProtocolError,
    Slot,
    SlotRefused,
    TransferFailed,
    UploadClient,
    UploadError,
    UploadService,
    XmppError,
    parse_slot,
    slot_headers,
    upload_file,
)
from httpupload.client.parsing import max_file_size
from httpupload.errors import HttpUploadError
from httpupload.testing import (
    Harness,
    Pump,
    connect_pair,
    make_harness,
    result_of,
    settle,
)

T = TypeVar("T")

DOMAIN = "example.org"
UPLOAD = "upload.example.org"
SCRIPTED = "scripted.example.org"
SILENT = "silent.example.org"
ROMEO = JID("romeo@example.org/phone")
LIMIT = 300_000
#: Where the recording site listens (in memory).
RECORDING = "http://recording.example:8080/"
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 443)


# ---- HTTP in memory: named hosts served by protocol factories


@implementer(IAgentEndpointFactory)
class Network:
    """Hosts (a URL's host and port) served in memory by protocol factories;
    a host nobody serves refuses the connection."""

    def __init__(self, clock: MemoryReactorClock) -> None:
        self.clock = clock
        self.hosts: dict[tuple[bytes, int], IProtocolFactory] = {}
        self.pumps: list[Pump] = []

    def serve(self, base_url: str, factory: IProtocolFactory) -> None:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.hosts[(parts.hostname or "").encode(), port] = factory

    def endpointForURI(self, uri: URI) -> _Endpoint:
        return _Endpoint(self, (uri.host, uri.port), uri.scheme == b"https")

    def open(
        self, key: tuple[bytes, int], factory: IProtocolFactory, tls: bool
    ) -> Deferred[IProtocol]:
        server_factory = self.hosts.get(key)
        if server_factory is None:
            return fail(ConnectionRefusedError("Connection refused"))
        client = factory.buildProtocol(PEER)
        server = server_factory.buildProtocol(PEER)
        assert client is not None and server is not None
        self.pumps.append(connect_pair(client, server, self.clock, peer=PEER, tls=tls))
        return succeed(client)

    def http(self) -> HTTPClient:
        pool = HTTPConnectionPool(self.clock, persistent=False)
        return HTTPClient(Agent.usingEndpointFactory(self.clock, self, pool=pool))

    def flush(self) -> None:
        """Move bytes and run what is due until nothing moves (new
        connections included)."""
        while True:
            count = len(self.pumps)
            settle(self.clock, self.pumps)
            if len(self.pumps) == count:
                break
        self.pumps = [pump for pump in self.pumps if not pump.closed]


@dataclass
class _Endpoint:
    network: Network
    key: tuple[bytes, int]
    tls: bool

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self.network.open(self.key, factory, self.tls)


# ---- the in-process XMPP world


@implementer(IDisco)
class ServerDisco(XMPPHandler):
    """The user's server: lists its items in disco#items of the domain."""

    def __init__(self, items: list[str]) -> None:
        super().__init__()
        self.items = items

    def getDiscoInfo(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[Any]:
        if target.full() != DOMAIN:
            return []
        return [
            disco.DiscoIdentity("server", "im"),
            disco.DiscoFeature("jabber:iq:version"),
        ]

    def getDiscoItems(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[Any]:
        if target.full() != DOMAIN or nodeIdentifier:
            return []
        return [disco.DiscoItem(JID(item)) for item in self.items]


@implementer(IDisco)
class ScriptedService(XMPPHandler, IQHandlerMixin):
    """An XEP-0363 service whose slot answers the test writes."""

    iqHandlers = {f"/iq[@type='get']/request[@xmlns='{NS_UPLOAD}']": "on_request"}

    def __init__(
        self,
        answer: Callable[[domish.Element], domish.Element],
        limit: int | None = None,
    ) -> None:
        super().__init__()
        self.answer = answer
        self.limit = limit

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver(
            f"/iq[@type='get']/request[@xmlns='{NS_UPLOAD}']", self.handleRequest
        )

    def on_request(self, iq: domish.Element) -> domish.Element:
        return self.answer(iq)

    def getDiscoInfo(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[Any]:
        info: list[Any] = [
            disco.DiscoIdentity("store", "file", "Scripted"),
            disco.DiscoFeature(NS_UPLOAD),
        ]
        if self.limit is not None:
            info.append(
                data_form.Form(
                    "result",
                    formNamespace=NS_UPLOAD,
                    fields=[
                        data_form.Field(var="max-file-size", value=str(self.limit))
                    ],
                )
            )
        return info

    def getDiscoItems(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[Any]:
        return []


class Recorder(XMPPHandler):
    """Keeps every IQ a component receives."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[domish.Element] = []

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/iq", self.received.append, priority=100)

    def slot_requests(self) -> list[domish.Element]:
        return [
            iq
            for iq in self.received
            if any(c.name == "request" for c in iq.elements())
        ]


class Recording(Resource):
    """Answers every PUT with ``code`` and ``body`` (or never), keeping it."""

    isLeaf = True

    def __init__(self, code: int = 201, body: bytes = b"", hold: bool = False) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.hold = hold
        self.requests: list[tuple[list[tuple[bytes, list[bytes]]], bytes]] = []

    def render_PUT(self, request: Request) -> bytes | int:
        assert request.content is not None
        headers = [(k, list(v)) for k, v in request.requestHeaders.getAllRawHeaders()]
        self.requests.append((headers, request.content.read()))
        if self.hold:
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        return self.body


@dataclass
class World:
    router: component.Router
    stream: EventDispatcher
    manager: StreamManager
    upload_log: Recorder
    client: UploadClient
    clock: MemoryReactorClock
    net: Network
    site: Harness
    recording: Recording
    scripted: ScriptedService | None = None
    components: list[component.InternalComponent] = field(default_factory=list)

    def run(self, work: Coroutine[Any, Any, T]) -> Deferred[T]:
        """Start ``work`` and let the exchange settle (it may still wait on
        the clock)."""
        d = ensureDeferred(work)
        self.net.flush()
        return d

    def result(self, work: Coroutine[Any, Any, T]) -> T:
        """What ``work`` returns once the exchange settles (its error raised)."""
        return result_of(self.run(work))

    def fetch(self, url: str) -> tuple[int, bytes]:
        """GET ``url`` from our site."""
        answer = self.site.request("GET", url)
        return answer.code, answer.body

    def close_stream(self) -> None:
        """The client's stream ends, as its connection closing ends it."""
        self.stream.dispatch(Failure(ConnectionLost()), xmlstream.STREAM_END_EVENT)


def make_world(
    items: tuple[str, ...] = ("conference.example.org", "broken.example.org", UPLOAD),
    limit: int = LIMIT,
    answer: Callable[[domish.Element], domish.Element] | None = None,
    scripted_limit: int | None = None,
    **client_options: Any,
) -> World:
    """A Router with the upload service, a client stream manager on it, and
    the HTTP sites, all on one MemoryReactorClock."""
    site = make_harness()
    clock = site.clock
    net = Network(clock)
    net.serve(site.base, site.site)
    recording = Recording()
    net.serve(RECORDING, Site(recording, reactor=clock))
    router = component.Router()
    components = []

    def add(domain: str, *handlers: XMPPHandler) -> None:
        part = component.InternalComponent(router, domain)
        for handler in handlers:
            handler.setHandlerParent(part)
        part.startService()
        components.append(part)

    upload_log = Recorder()
    add(
        UPLOAD,
        upload_log,
        generic.FallbackHandler(),
        disco.DiscoHandler(),
        UploadHandler(
            SlotPolicy(limit, (DOMAIN,)), site.signer, site.base, site.base, 300
        ),
    )

    @implementer(IDisco)
    class Muc(XMPPHandler):
        def getDiscoInfo(self, *args: Any) -> list[Any]:
            return [disco.DiscoIdentity("conference", "text", "Chatrooms")]

        def getDiscoItems(self, *args: Any) -> list[Any]:
            return []

    add("conference.example.org", disco.DiscoHandler(), Muc())
    # Answers every IQ with service-unavailable (a component gone bad).
    add("broken.example.org", generic.FallbackHandler())
    scripted = None
    if answer is not None:
        scripted = ScriptedService(answer, scripted_limit)
        add(SCRIPTED, generic.FallbackHandler(), disco.DiscoHandler(), scripted)
    # Takes IQs and never answers.
    silent = XmlPipe()
    router.addRoute(SILENT, silent.sink)

    # The user's stream: replies to romeo@example.org come back on it, and so
    # do its requests to example.org itself, where ServerDisco answers. The
    # manager learns of it through the factory's bootstrap events, as from a
    # real stream.
    pipe = XmlPipe()
    router.addRoute(DOMAIN, pipe.sink)
    factory = BootstrapMixin()
    manager = StreamManager(factory, reactor=clock)
    factory.installBootstraps(pipe.source)
    pipe.source.dispatch(pipe.source, xmlstream.STREAM_CONNECTED_EVENT)
    pipe.source.dispatch(pipe.source, xmlstream.STREAM_AUTHD_EVENT)
    disco.DiscoHandler().setHandlerParent(manager)
    ServerDisco(list(items)).setHandlerParent(manager)
    options = {"sender": ROMEO, "http": net.http(), **client_options}
    client = UploadClient(clock, manager, **options)
    return World(
        router, pipe.source, manager, upload_log, client, clock, net, site,
        recording, scripted, components,
    )  # fmt: skip


@pytest.fixture
def world() -> World:
    """The default world: the upload service behind two other items."""
    return make_world()


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def slot_answer(
    put_url: str, get_url: str, headers: list[tuple[str, str]]
) -> Callable[[domish.Element], domish.Element]:
    def answer(iq: domish.Element) -> domish.Element:
        slot = domish.Element((NS_UPLOAD, "slot"))
        put = slot.addElement("put")
        put["url"] = put_url
        for name, value in headers:
            put.addElement("header", content=value)["name"] = name
        slot.addElement("get")["url"] = get_url
        return slot

    return answer


def scripted_world(
    put_url: str,
    get_url: str,
    headers: list[tuple[str, str]] | None = None,
    **options: Any,
) -> World:
    """A world whose only service answers with this slot."""
    return make_world(
        items=(SCRIPTED,),
        answer=slot_answer(put_url, get_url, headers or []),
        **options,
    )


# ---- pure parts


def test_slot_headers_keep_only_the_three_allowed_in_order() -> None:
    """Newlines stripped, other names dropped, case folded, order kept (§4, §8.2)."""
    pairs = [
        ("Cookie", "a=1"),
        ("Content-Type", "text/html"),
        ("Authorization", "Bearer x\r\nX-Injected: 1"),
        ("Host", "evil.example"),
        ("eXpires", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("cookie", "b=2"),
        ("Author\nization", "Basic abc"),
        ("X-Anything", "no"),
        ("Cookie\r", "c=3"),
    ]
    assert slot_headers(pairs) == (
        ("Cookie", "a=1"),
        ("Authorization", "Bearer xX-Injected: 1"),
        ("Expires", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("Cookie", "b=2"),
        ("Authorization", "Basic abc"),
        ("Cookie", "c=3"),
    )


@given(st.lists(st.tuples(st.text(), st.text()), max_size=8))
def test_slot_headers_never_pass_a_newline_or_another_name(
    pairs: list[tuple[str, str]],
) -> None:
    """Whatever a slot holds, a PUT carries only the allowed names, no CR or LF."""
    for name, value in slot_headers(pairs):
        assert name in ALLOWED_HEADERS
        assert "\r" not in value and "\n" not in value


def _slot_element(put: str | None, get: str | None) -> domish.Element:
    slot = domish.Element((NS_UPLOAD, "slot"))
    if put is not None:
        slot.addElement("put")["url"] = put
    if get is not None:
        slot.addElement("get")["url"] = get
    return slot


@pytest.mark.parametrize(
    ("put", "get"),
    [
        (None, "https://d/x"),
        ("https://u/x", None),
        ("javascript:alert(1)", "https://d/x"),
        ("https://u/x", "file:///etc/passwd"),
    ],
)
def test_a_slot_without_http_urls_is_a_protocol_error(
    put: str | None, get: str | None
) -> None:
    """A slot missing a URL, or with one that is not HTTP(S), is refused."""
    with pytest.raises(ProtocolError):
        parse_slot(_slot_element(put, get), "a", 1, None)


def _refusal(app_condition: domish.Element) -> SlotRefused:
    return SlotRefused(
        "slot request", "upload.example.org", "not-acceptable", "modify", None,
        app_condition,
    )  # fmt: skip


def _too_large(max_file_size: str) -> SlotRefused:
    element = domish.Element((NS_UPLOAD, "file-too-large"))
    element.addElement("max-file-size", content=max_file_size)
    return _refusal(element)


@pytest.mark.parametrize(
    "text", ["1" * 5000, "1" * 21, "+5", " 5", "5 ", "-5", "0", "١٢٣", "5.0", ""]
)
def test_a_max_file_size_other_than_plain_digits_is_unknown(text: str) -> None:
    """A limit with a sign, spaces, other digits or thousands of them reads as None."""
    assert _too_large(text).max_file_size is None


def test_a_max_file_size_of_digits_is_read() -> None:
    """Plain decimal digits are the limit."""
    assert _too_large("20000").max_file_size == 20000


def _advertised(value: str) -> int | None:
    form = data_form.Form("result", formNamespace=NS_UPLOAD)
    form.addField(data_form.Field(var="max-file-size", value=value))
    query = domish.Element((disco.NS_DISCO_INFO, "query"))
    query.addElement("feature")["var"] = NS_UPLOAD
    query.addChild(form.toElement())
    return max_file_size(disco.DiscoInfo.fromElement(query))


def test_an_advertised_limit_of_thousands_of_digits_is_unknown() -> None:
    """disco#info's max-file-size of 5,000 digits is no limit known, not a crash."""
    assert _advertised("9" * 5000) is None
    assert _advertised("5242880") == 5242880


def _retry(stamp: str) -> SlotRefused:
    element = domish.Element((NS_UPLOAD, "retry"))
    element["stamp"] = stamp
    return _refusal(element)


@pytest.mark.parametrize(
    "stamp",
    [
        "2030-W01-2T03:04:05Z",
        "20300102T030405Z",
        "2030-01-02 03:04:05Z",
        "2030-01-02T03:04Z",
        "2030-01-02T04:04:05+0100",
        "2030-01-02T03:04:05",
        "",
    ],
)
def test_a_retry_stamp_other_than_xep_0082_is_unknown(stamp: str) -> None:
    """A retry stamp in ISO 8601's other forms reads as no stamp."""
    assert _retry(stamp).retry_at is None


@pytest.mark.parametrize("stamp", ["2030-01-02T03:04:05Z", "2030-01-02T04:04:05+01:00"])
def test_an_xep_0082_retry_stamp_is_read(stamp: str) -> None:
    """An XEP-0082 stamp, in UTC or with an offset, is the retry time."""
    assert _retry(stamp).retry_at == 1893553445.0


def test_every_error_is_an_upload_error() -> None:
    """One base class to catch, itself under the package's base error."""
    for cls in (
        NoUploadService, FileTooLarge, XmppError, SlotRefused, NoAnswer,
        ProtocolError, HttpError, TransferFailed,
    ):  # fmt: skip
        assert issubclass(cls, UploadError)
    assert issubclass(UploadError, HttpUploadError)


def test_producer_reads_in_bounded_chunks_and_stops_at_the_length() -> None:
    """No whole-file read: chunks of at most 64 KiB, never past the slot size."""

    class Spy(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.reads: list[int] = []

        def read(self, size: int | None = -1) -> bytes:
            self.reads.append(-1 if size is None else size)
            return super().read(size)

    class Sink:
        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.chunks.append(data)

    clock = Clock()
    cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
    data = os.urandom(200_000) + b"not announced"
    spy, sink = Spy(data), Sink()
    seen: list[int] = []
    producer = FileProducer(spy, 200_000, cooperator, seen.append)
    done = producer.startProducing(sink)  # type: ignore[arg-type]
    for _ in range(10):
        clock.advance(0)
    assert done.called
    assert b"".join(sink.chunks) == data[:200_000]
    assert all(0 < size <= 64 * 1024 for size in spy.reads)
    assert seen == [65536, 131072, 196608, 200000]


def test_producer_fails_when_the_file_shrank() -> None:
    """A file shorter than the slot's size fails the body, saying it changed."""
    clock = Clock()
    cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
    producer = FileProducer(io.BytesIO(b"short"), 10, cooperator)
    done = producer.startProducing(type("S", (), {"write": lambda s, d: None})())
    clock.advance(0)
    clock.advance(0)
    errors: list[Failure] = []
    done.addErrback(errors.append)
    assert errors and errors[0].check(UploadError)
    assert "changed during the upload" in errors[0].getErrorMessage()


def test_slot_is_a_plain_value() -> None:
    """A Slot is a frozen value built from its fields."""
    slot = Slot("https://u/p", "https://u/g", (("Cookie", "a"),), "p", 1, None)
    assert slot.headers == (("Cookie", "a"),)


# ---- discovery


def test_discover_finds_the_service_and_its_limit(world: World) -> None:
    """disco#items, then disco#info of each: items that refuse are skipped."""
    service = world.result(world.client.discover(DOMAIN))
    assert service == UploadService(JID(UPLOAD), LIMIT)
    # Cached: no second round of disco.
    before = len(world.upload_log.received)
    assert world.result(world.client.discover(DOMAIN)) is service
    assert len(world.upload_log.received) == before


def test_discover_without_a_service() -> None:
    """A domain whose items offer no upload (nor itself): NoUploadService."""
    world = make_world(items=("conference.example.org",))
    with pytest.raises(NoUploadService, match=r"example\.org offers no HTTP File"):
        world.result(world.client.discover(DOMAIN))


def test_discover_reads_no_limit_when_none_is_advertised() -> None:
    """A service without a max-file-size form has no known limit."""
    world = scripted_world("http://x/", "http://x/")
    assert world.result(world.client.discover(DOMAIN)) == UploadService(
        JID(SCRIPTED), None
    )


def test_discovery_waits_out_a_silent_item_then_answers() -> None:
    """An item that never answers delays discovery by the IQ timeout, no more."""
    world = make_world(items=(SILENT, UPLOAD), timeout=10)
    found = world.run(world.client.discover(DOMAIN))
    assert not found.called
    world.clock.advance(10)
    assert found.result == UploadService(JID(UPLOAD), LIMIT)


def test_no_answer_in_time() -> None:
    """An IQ unanswered within the timeout is NoAnswer, saying how long."""
    world = make_world(timeout=5)
    asked = world.run(world.client.disco_info(SILENT))
    world.clock.advance(5)
    errors: list[Failure] = []
    asked.addErrback(errors.append)
    assert errors[0].check(NoAnswer)
    assert "within 5 s" in errors[0].getErrorMessage()


def test_no_answer_when_the_stream_closes() -> None:
    """A stream that ends before the answer is NoAnswer, not a hang."""
    world = make_world()
    asked = world.run(world.client.request_slot(SILENT, "a.txt", 5))
    world.close_stream()
    errors: list[Failure] = []
    asked.addErrback(errors.append)
    assert errors[0].check(NoAnswer)
    assert "stream closed" in errors[0].getErrorMessage()


def test_disco_error_carries_the_condition(world: World) -> None:
    """A disco#info refused with a stanza error is XmppError with its condition."""
    with pytest.raises(XmppError) as refused:
        world.result(world.client.disco_info("broken.example.org"))
    assert refused.value.condition == "service-unavailable"
    assert refused.value.entity == "broken.example.org"


# ---- uploads through httpupload's own service


def test_upload_round_trip_with_progress(world: World, tmp_path: Path) -> None:
    """Discover, slot, PUT from disk in chunks; the GET URL serves the bytes."""
    data = os.urandom(LIMIT)
    path = write_file(tmp_path, "très cool.bin", data)
    seen: list[tuple[int, int]] = []
    url = world.result(
        world.client.upload(
            path, domain=DOMAIN, progress=lambda sent, total: seen.append((sent, total))
        )
    )
    assert url.startswith(world.site.base)
    assert url.endswith("/tr%C3%A8s%20cool.bin")
    assert world.fetch(url) == (200, data)
    assert seen[0] == (0, LIMIT) and seen[-1] == (LIMIT, LIMIT)
    sent = [s for s, _ in seen]
    assert sent == sorted(sent) and len(sent) >= LIMIT // (64 * 1024)


def test_upload_sends_the_guessed_content_type(world: World, tmp_path: Path) -> None:
    """A file's type is guessed from its name, asked for, and served back."""
    path = write_file(tmp_path, "note.txt", b"hello there")
    url = world.result(world.client.upload(path, domain=DOMAIN))
    assert world.site.request("GET", url).header("Content-Type") == "text/plain"
    slot_request = world.upload_log.slot_requests()[-1].request
    assert slot_request["content-type"] == "text/plain"
    assert slot_request["size"] == "11"


def test_upload_file_convenience(world: World, tmp_path: Path) -> None:
    """upload_file: one upload with a fresh client, a Deferred of the GET URL."""
    path = write_file(tmp_path, "x.bin", b"12345")
    url = world.result(
        _awaited(
            upload_file(
                world.clock, world.manager, path, domain=DOMAIN, sender=ROMEO,
                http=world.net.http(),
            )
        )
    )  # fmt: skip
    assert world.fetch(url) == (200, b"12345")


async def _awaited(d: Deferred[T]) -> T:
    return await d


def test_too_large_is_refused_before_any_slot_request(
    world: World, tmp_path: Path
) -> None:
    """Over the advertised limit: FileTooLarge, and no slot is asked for."""
    path = write_file(tmp_path, "big.bin", b"x" * (LIMIT + 1))
    with pytest.raises(FileTooLarge) as refused:
        world.result(world.client.upload(path, domain=DOMAIN))
    assert refused.value.size == LIMIT + 1
    assert refused.value.max_file_size == LIMIT
    assert refused.value.refused is None
    assert world.upload_log.slot_requests() == []


def test_too_large_refused_by_the_service(world: World, tmp_path: Path) -> None:
    """Without discovery the limit is unknown: the service's refusal says it."""
    path = write_file(tmp_path, "big.bin", b"x" * (LIMIT + 1))
    with pytest.raises(FileTooLarge) as refused:
        world.result(world.client.upload(path, service=UPLOAD))
    error = refused.value
    assert error.max_file_size == LIMIT
    assert error.refused is not None
    assert error.refused.condition == "not-acceptable"
    assert error.refused.error_type == "modify"
    assert f"maximum file size is {LIMIT}" in (error.refused.server_text or "")
    assert len(world.upload_log.slot_requests()) == 1


def test_refusal_carries_the_services_text(tmp_path: Path) -> None:
    """A requester outside the service's domains: auth/forbidden with its text."""
    world = make_world(sender=JID("mallory@evil.example/x"))
    path = write_file(tmp_path, "a.txt", b"hello")
    # Replies to evil.example need a route: give it one that forwards to us.
    world.router.addRoute("evil.example", _forward(world))
    with pytest.raises(SlotRefused) as refused:
        world.result(world.client.upload(path, service=UPLOAD))
    error = refused.value
    assert (error.error_type, error.condition) == ("auth", "forbidden")
    assert error.server_text
    assert error.server_text in str(error)


class _Forward(EventDispatcher):
    """A route whose stanzas arrive on another stream."""

    def __init__(self, target: EventDispatcher) -> None:
        super().__init__()
        self.target = target

    def send(self, obj: domish.Element) -> None:
        self.target.dispatch(obj)


def _forward(world: World) -> EventDispatcher:
    """A route whose stanzas arrive on the test's client stream."""
    return _Forward(world.stream)


def test_quota_refusal_carries_the_retry_stamp(tmp_path: Path) -> None:
    """A resource-constraint refusal with <retry stamp>: retry_at and the text."""

    def refuse(iq: domish.Element) -> domish.Element:
        retry = domish.Element((NS_UPLOAD, "retry"))
        retry["stamp"] = "2030-01-02T03:04:05Z"
        raise StanzaError(
            "resource-constraint", "wait", "Quota reached", appCondition=retry
        )

    world = make_world(items=(SCRIPTED,), answer=refuse)
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(SlotRefused) as refused:
        world.result(world.client.upload(path, domain=DOMAIN))
    assert refused.value.retry_at == 1893553445.0
    assert refused.value.server_text == "Quota reached"
    assert refused.value.max_file_size is None


def test_result_without_a_slot_is_a_protocol_error(tmp_path: Path) -> None:
    """A result that carries no <slot/> breaks the XEP: ProtocolError."""

    def nothing(iq: domish.Element) -> domish.Element:
        return domish.Element((NS_UPLOAD, "nothing"))

    world = make_world(items=(SCRIPTED,), answer=nothing)
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(ProtocolError, match="without a slot"):
        world.result(world.client.upload(path, domain=DOMAIN))


def test_empty_file_is_refused_locally(world: World, tmp_path: Path) -> None:
    """An empty file is refused before any request (XEP-0363 sizes are positive)."""
    path = write_file(tmp_path, "empty", b"")
    with pytest.raises(UploadError, match="empty"):
        world.result(world.client.upload(path, domain=DOMAIN))
    assert world.upload_log.received == []


def test_missing_file_is_an_os_error(world: World, tmp_path: Path) -> None:
    """A file that cannot be opened raises OSError as usual."""
    with pytest.raises(FileNotFoundError):
        world.result(world.client.upload(tmp_path / "nope", domain=DOMAIN))


# ---- HTTP: exactly the allowed headers, and failures


def test_put_sends_exactly_the_allowed_headers(tmp_path: Path) -> None:
    """The PUT carries the slot's allowed headers (newlines stripped) and no other."""
    headers = [
        ("Authorization", "Bearer one\n"),
        ("X-Evil", "1"),
        ("cookie", "a=1"),
        ("Host", "elsewhere"),
        ("Cookie", "b=2"),
        ("EXPIRES", "0"),
        ("Content-Length", "1"),
    ]
    world = scripted_world(RECORDING + "put/n.txt", RECORDING + "get/n.txt", headers)
    path = write_file(tmp_path, "n.txt", b"hi there")
    url = world.result(world.client.upload(path, domain=DOMAIN))
    assert url == RECORDING + "get/n.txt"
    [(received, body)] = world.recording.requests
    assert body == b"hi there"
    sent = dict(received)
    assert sent[b"Authorization"] == [b"Bearer one"]
    assert sent[b"Cookie"] == [b"a=1", b"b=2"]
    assert sent[b"Expires"] == [b"0"]
    assert sent[b"Content-Length"] == [b"8"]
    assert sent[b"Content-Type"] == [b"text/plain"]
    assert set(sent) <= {
        b"Authorization", b"Cookie", b"Expires", b"Content-Length",
        b"Content-Type", b"Host", b"Connection", b"User-Agent", b"Accept-Encoding",
    }  # fmt: skip
    assert sent[b"Host"] != [b"elsewhere"]
    assert b"X-Evil" not in sent


def test_put_of_an_untyped_slot_says_octet_stream(tmp_path: Path) -> None:
    """A file of no known type: the PUT names application/octet-stream, the type a
    direct-mode (presigned S3) slot without a type binds, so it is not refused."""
    world = scripted_world(RECORDING + "put/n.qqq", RECORDING + "get/n.qqq")
    path = write_file(tmp_path, "n.qqq", b"no type")
    world.result(world.client.upload(path, domain=DOMAIN))
    [(received, _body)] = world.recording.requests
    assert dict(received)[b"Content-Type"] == [b"application/octet-stream"]


@pytest.mark.parametrize("size", [5, 3 * 1024 * 1024], ids=["small", "3MiB"])
def test_http_error_carries_status_and_body(tmp_path: Path, size: int) -> None:
    """A PUT the site refuses (a forged token): HttpError with its text.

    A large body is refused from the headers, before it is sent: the answer
    still arrives as the error, not as a broken connection.
    """
    base = make_harness().base
    world = scripted_world(
        base + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/a.txt?token=secret",
        base + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/a.txt",
        [("Authorization", "Bearer v1.forged.token")],
    )
    path = write_file(tmp_path, "a.txt", b"h" * size)
    with pytest.raises(HttpError) as failed:
        world.result(world.client.upload(path, domain=DOMAIN))
    error = failed.value
    assert error.status == 403
    assert error.body.strip()
    assert error.body.strip() in str(error)
    assert "secret" not in str(error)  # the query (a token) is not repeated


def test_second_put_of_a_slot_is_an_http_conflict(world: World, tmp_path: Path) -> None:
    """A slot takes one upload: its second PUT is HTTP 409."""
    path = write_file(tmp_path, "twice.txt", b"hello")
    service = world.result(world.client.discover(DOMAIN))
    slot = world.result(
        world.client.request_slot(service, "twice.txt", 5, "text/plain")
    )
    with open(path, "rb") as file:
        world.result(world.client.put(slot, file))
    with open(path, "rb") as file, pytest.raises(HttpError) as failed:
        world.result(world.client.put(slot, file))
    assert failed.value.status == 409


def test_refused_connection_is_a_transfer_failure(tmp_path: Path) -> None:
    """A PUT URL where nothing listens: TransferFailed saying it was refused."""
    world = scripted_world("http://nothing.example:1/a", "http://x/a")
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(TransferFailed, match="refused"):
        world.result(world.client.upload(path, domain=DOMAIN))


def test_a_stalled_put_is_given_up(tmp_path: Path) -> None:
    """A server that takes the body and never answers: TransferFailed after
    idle_timeout seconds of no progress."""
    world = scripted_world(RECORDING + "a", RECORDING + "a", idle_timeout=0.3)
    world.recording.hold = True
    path = write_file(tmp_path, "a.txt", b"hello")
    uploading = world.run(world.client.upload(path, domain=DOMAIN))
    assert not uploading.called
    world.clock.advance(0.3)
    errors: list[Failure] = []
    uploading.addErrback(errors.append)
    assert errors and errors[0].check(TransferFailed)
    assert "no progress for 0.3 s" in errors[0].getErrorMessage()


def test_any_2xx_is_success(tmp_path: Path) -> None:
    """A 200 with a body is success, as the XEP's 201 is."""
    world = scripted_world(RECORDING + "a", RECORDING + "g")
    world.recording.code, world.recording.body = 200, b"fine"
    path = write_file(tmp_path, "a.bin", b"\0" * 10)
    assert world.result(world.client.upload(path, domain=DOMAIN)) == RECORDING + "g"
