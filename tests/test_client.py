"""The Twisted client API (httpupload.client) and the command's pure parts.

The XMPP side runs in-process: a wokkel ``Router`` with our ``UploadHandler``
as an ``InternalComponent`` and a client ``StreamManager`` on an ``XmlPipe``
(with a stand-in for the user's server answering disco#items of the domain);
the client sends as ``romeo@example.org/phone``, as a component would. The
HTTP side is a real ``UploadSite`` on a loopback port (tests/webserver.py),
or a recording ``twisted.web`` site where the test needs to see the request.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock, Cooperator
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from twisted.words.xish.utility import EventDispatcher
from webserver import Server
from wokkel import component, data_form, disco, generic
from wokkel.generic import XmlPipe
from wokkel.iwokkel import IDisco
from wokkel.subprotocols import IQHandlerMixin, StreamManager, XMPPHandler
from zope.interface import implementer

from httpupload import SlotPolicy, UploadHandler, send
from httpupload.client import (
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
    _max_file_size,
    parse_slot,
    slot_headers,
    upload_file,
)
from httpupload.errors import HttpUploadError
from httpupload.send import (
    ProgressBar,
    UsageError,
    oob_message,
    parse_server,
    read_password,
    render_progress,
)

DOMAIN = "example.org"
UPLOAD = "upload.example.org"
SCRIPTED = "scripted.example.org"
SILENT = "silent.example.org"
ROMEO = JID("romeo@example.org/phone")
LIMIT = 300_000


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


class DummyFactory:
    def addBootstrap(self, event: str, fn: Callable[..., object]) -> None:
        pass


@dataclass
class World:
    router: component.Router
    manager: StreamManager
    upload_log: Recorder
    client: UploadClient
    scripted: ScriptedService | None = None
    components: list[component.InternalComponent] = field(default_factory=list)


def make_world(
    server: Server | None,
    items: tuple[str, ...] = ("conference.example.org", "broken.example.org", UPLOAD),
    limit: int = LIMIT,
    clock: Any = None,
    answer: Callable[[domish.Element], domish.Element] | None = None,
    scripted_limit: int | None = None,
    **client_options: Any,
) -> World:
    """A Router with the upload service, and a client stream manager on it."""
    router = component.Router()
    components = []

    def add(domain: str, *handlers: XMPPHandler) -> None:
        part = component.InternalComponent(router, domain)
        for handler in handlers:
            handler.setHandlerParent(part)
        part.startService()
        components.append(part)

    upload_log = Recorder()
    if server is not None:
        add(
            UPLOAD,
            upload_log,
            generic.FallbackHandler(),
            disco.DiscoHandler(),
            UploadHandler(
                SlotPolicy(limit, (DOMAIN,)), server.signer, server.base,
                server.base, 300,
            ),
        )  # fmt: skip

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
    # do its requests to example.org itself, where ServerDisco answers.
    pipe = XmlPipe()
    router.addRoute(DOMAIN, pipe.sink)
    manager = StreamManager(DummyFactory(), reactor=clock or global_reactor)
    manager._connected(pipe.source)
    manager._authd(pipe.source)
    disco.DiscoHandler().setHandlerParent(manager)
    ServerDisco(list(items)).setHandlerParent(manager)
    options = {"sender": ROMEO, **client_options}
    client = UploadClient(global_reactor, manager, **options)
    return World(router, manager, upload_log, client, scripted, components)


@pytest.fixture
def world(server: Server) -> World:
    return make_world(server)


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def fetch(url: str) -> tuple[int, bytes]:
    response = await treq.get(url, persistent=False)
    return response.code, await response.content()


# ---- a recording HTTP server


class Recording(Resource):
    """Answers every PUT with ``code`` and ``body`` (or never), keeping it."""

    isLeaf = True

    def __init__(self, code: int = 201, body: bytes = b"", hold: bool = False) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.hold = hold
        self.requests: list[tuple[list[tuple[bytes, list[bytes]]], bytes]] = []
        self.held: list[Request] = []

    def render_PUT(self, request: Request) -> bytes | int:
        assert request.content is not None
        headers = [(k, list(v)) for k, v in request.requestHeaders.getAllRawHeaders()]
        self.requests.append((headers, request.content.read()))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        return self.body


@pytest_twisted.async_yield_fixture
async def recording() -> AsyncIterator[tuple[Recording, str]]:
    resource = Recording()
    port = global_reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    yield resource, f"http://127.0.0.1:{port.getHost().port}/"
    for request in resource.held:
        if not request.finished and request.channel is not None:
            request.channel.transport.abortConnection()
    await port.stopListening()


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
    return _max_file_size(disco.DiscoInfo.fromElement(query))


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
    spy, sink, seen = Spy(data), Sink(), []
    producer = FileProducer(spy, 200_000, cooperator, seen.append)
    done = producer.startProducing(sink)  # type: ignore[arg-type]
    for _ in range(10):
        clock.advance(0)
    assert done.called
    assert b"".join(sink.chunks) == data[:200_000]
    assert all(0 < size <= 64 * 1024 for size in spy.reads)
    assert seen == [65536, 131072, 196608, 200000]


def test_producer_fails_when_the_file_shrank() -> None:
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


def test_render_progress() -> None:
    line = render_progress(512 * 1024, 1024 * 1024, 2.0, width=10)
    assert line == " 50% [#####-----] 512.0 KiB / 1.0 MiB 256.0 KiB/s"
    assert render_progress(3, 3, 0.0, width=4) == "100% [####] 3 B / 3 B"


def test_progress_bar_redraws_one_line_at_most_every_interval() -> None:
    out, now = io.StringIO(), [0.0]
    bar = ProgressBar(out, interval=0.1, clock=lambda: now[0])
    bar(0, 100)
    bar(10, 100)  # too soon: not drawn
    now[0] = 0.5
    bar(50, 100)
    bar(100, 100)  # the end is always drawn
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n") and text.count("\n") == 1
    assert " 50% " in text and "100% " in text and " 10% " not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("xmpp.example.org:5223", ("xmpp.example.org", 5223)),
        ("127.0.0.1", ("127.0.0.1", 5222)),
        ("[::1]:5299", ("::1", 5299)),
        ("[::1]", ("::1", 5222)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "host:0",
        "host:99999",
        "host:x",
        ":5222",
        "[::1]x",
        "host:\u0665\u0662\u0662\u0662",  # Arabic-Indic digits
        "host:+5222",
        "host:" + "9" * 5000,
    ],
)
def test_parse_server_refuses(text: str) -> None:
    """A port that is not 1-65535 in ASCII digits is a usage error, said briefly."""
    with pytest.raises(UsageError) as refused:
        parse_server(text)
    assert len(str(refused.value)) < 200


def test_read_password(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("s3cret pass \nsecond line\n")
    assert read_password(str(tmp_path / "p")) == "s3cret pass "
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        read_password(str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="cannot read"):
        read_password(str(tmp_path / "missing"))


@pytest_twisted.ensureDeferred
async def test_srv_records_then_the_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    """SRV targets by priority; no service (target "."), a failure: the domain."""

    def answer(*records: tuple[int, int, str, int]) -> Callable[..., Any]:
        rows = [
            dns.RRHeader(
                type=dns.SRV, payload=dns.Record_SRV(prio, weight, port, target)
            )
            for prio, weight, target, port in records
        ]
        return lambda name, timeout=None: succeed((rows, [], []))

    monkeypatch.setattr(
        send.dns,
        "lookupService",
        answer((20, 0, "b.example.org", 5223), (10, 5, "a.example.org", 5222)),
    )
    assert await send._srv_candidates("example.org", 1) == [
        ("a.example.org", 5222),
        ("b.example.org", 5223),
    ]
    monkeypatch.setattr(send.dns, "lookupService", answer((0, 0, "", 0)))
    assert await send._srv_candidates("example.org", 1) == [("example.org", 5222)]
    monkeypatch.setattr(
        send.dns, "lookupService", lambda *a, **k: fail(dns.DomainError())
    )
    assert await send._srv_candidates("example.org", 1) == [("example.org", 5222)]


def test_oob_message() -> None:
    url = "https://upload.example.org/abc/photo%20one.jpg"
    message = oob_message(JID("juliet@example.org"), url)
    assert message["to"] == "juliet@example.org"
    assert message["type"] == "chat"
    assert str(message.body) == url
    oob = next(message.elements("jabber:x:oob", "x"))
    assert str(next(oob.elements("jabber:x:oob", "url"))) == url


# ---- discovery


@pytest_twisted.ensureDeferred
async def test_discover_finds_the_service_and_its_limit(world: World) -> None:
    """disco#items, then disco#info of each: items that refuse are skipped."""
    service = await world.client.discover(DOMAIN)
    assert service == UploadService(JID(UPLOAD), LIMIT)
    # Cached: no second round of disco.
    before = len(world.upload_log.received)
    assert await world.client.discover(DOMAIN) is service
    assert len(world.upload_log.received) == before


@pytest_twisted.ensureDeferred
async def test_discover_without_a_service(server: Server) -> None:
    world = make_world(server, items=("conference.example.org",))
    with pytest.raises(NoUploadService, match=r"example\.org offers no HTTP File"):
        await world.client.discover(DOMAIN)


@pytest_twisted.ensureDeferred
async def test_discover_reads_no_limit_when_none_is_advertised(server: Server) -> None:
    world = make_world(
        server,
        items=(SCRIPTED,),
        answer=slot_answer("http://x/", "http://x/", []),
        scripted_limit=None,
    )
    assert await world.client.discover(DOMAIN) == UploadService(JID(SCRIPTED), None)


def test_discovery_waits_out_a_silent_item_then_answers(server: Server) -> None:
    clock = Clock()
    world = make_world(server, items=(SILENT, UPLOAD), clock=clock, timeout=10)
    found = ensureDeferred(world.client.discover(DOMAIN))
    assert not found.called
    clock.advance(10)
    assert found.result == UploadService(JID(UPLOAD), LIMIT)


def test_no_answer_in_time(server: Server) -> None:
    clock = Clock()
    world = make_world(server, clock=clock, timeout=5)
    asked = ensureDeferred(world.client.disco_info(SILENT))
    clock.advance(5)
    errors: list[Failure] = []
    asked.addErrback(errors.append)
    assert errors[0].check(NoAnswer)
    assert "within 5 s" in errors[0].getErrorMessage()


def test_no_answer_when_the_stream_closes(server: Server) -> None:
    clock = Clock()
    world = make_world(server, clock=clock)
    asked = ensureDeferred(world.client.request_slot(SILENT, "a.txt", 5))
    world.manager._disconnected(Failure(ConnectionLost()))
    errors: list[Failure] = []
    asked.addErrback(errors.append)
    assert errors[0].check(NoAnswer)
    assert "stream closed" in errors[0].getErrorMessage()


@pytest_twisted.ensureDeferred
async def test_disco_error_carries_the_condition(world: World) -> None:
    with pytest.raises(XmppError) as refused:
        await world.client.disco_info("broken.example.org")
    assert refused.value.condition == "service-unavailable"
    assert refused.value.entity == "broken.example.org"


# ---- uploads through httpupload's own service


@pytest_twisted.ensureDeferred
async def test_upload_round_trip_with_progress(
    world: World, server: Server, tmp_path: Path
) -> None:
    """Discover, slot, PUT from disk in chunks; the GET URL serves the bytes."""
    data = os.urandom(LIMIT)
    path = write_file(tmp_path, "très cool.bin", data)
    seen: list[tuple[int, int]] = []
    url = await world.client.upload(
        path, domain=DOMAIN, progress=lambda sent, total: seen.append((sent, total))
    )
    assert url.startswith(server.base)
    assert url.endswith("/tr%C3%A8s%20cool.bin")
    assert await fetch(url) == (200, data)
    assert seen[0] == (0, LIMIT) and seen[-1] == (LIMIT, LIMIT)
    sent = [s for s, _ in seen]
    assert sent == sorted(sent) and len(sent) >= LIMIT // (64 * 1024)


@pytest_twisted.ensureDeferred
async def test_upload_sends_the_guessed_content_type(
    world: World, tmp_path: Path
) -> None:
    path = write_file(tmp_path, "note.txt", b"hello there")
    url = await world.client.upload(path, domain=DOMAIN)
    response = await treq.get(url, persistent=False)
    await response.content()
    assert response.headers.getRawHeaders("Content-Type") == ["text/plain"]
    slot_request = world.upload_log.slot_requests()[-1].request
    assert slot_request["content-type"] == "text/plain"
    assert slot_request["size"] == "11"


@pytest_twisted.ensureDeferred
async def test_upload_file_convenience(server: Server, tmp_path: Path) -> None:
    world = make_world(server)
    path = write_file(tmp_path, "x.bin", b"12345")
    url = await upload_file(
        global_reactor, world.manager, path, domain=DOMAIN, sender=ROMEO
    )
    assert await fetch(url) == (200, b"12345")


@pytest_twisted.ensureDeferred
async def test_too_large_is_refused_before_any_slot_request(
    world: World, tmp_path: Path
) -> None:
    path = write_file(tmp_path, "big.bin", b"x" * (LIMIT + 1))
    with pytest.raises(FileTooLarge) as refused:
        await world.client.upload(path, domain=DOMAIN)
    assert refused.value.size == LIMIT + 1
    assert refused.value.max_file_size == LIMIT
    assert refused.value.refused is None
    assert world.upload_log.slot_requests() == []


@pytest_twisted.ensureDeferred
async def test_too_large_refused_by_the_service(world: World, tmp_path: Path) -> None:
    """Without discovery the limit is unknown: the service's refusal says it."""
    path = write_file(tmp_path, "big.bin", b"x" * (LIMIT + 1))
    with pytest.raises(FileTooLarge) as refused:
        await world.client.upload(path, service=UPLOAD)
    error = refused.value
    assert error.max_file_size == LIMIT
    assert error.refused is not None
    assert error.refused.condition == "not-acceptable"
    assert error.refused.error_type == "modify"
    assert f"maximum file size is {LIMIT}" in (error.refused.server_text or "")
    assert len(world.upload_log.slot_requests()) == 1


@pytest_twisted.ensureDeferred
async def test_refusal_carries_the_services_text(
    server: Server, tmp_path: Path
) -> None:
    """A requester outside the service's domains: auth/forbidden with its text."""
    world = make_world(server, sender=JID("mallory@evil.example/x"))
    path = write_file(tmp_path, "a.txt", b"hello")
    # Replies to evil.example need a route: give it one that forwards to us.
    world.router.addRoute("evil.example", _forward(world))
    with pytest.raises(SlotRefused) as refused:
        await world.client.upload(path, service=UPLOAD)
    error = refused.value
    assert (error.error_type, error.condition) == ("auth", "forbidden")
    assert error.server_text
    assert error.server_text in str(error)


def _forward(world: World) -> EventDispatcher:
    """A route whose stanzas arrive on the test's client stream."""
    sink = EventDispatcher()
    sink.send = world.manager.xmlstream.dispatch  # type: ignore[method-assign]
    return sink


@pytest_twisted.ensureDeferred
async def test_quota_refusal_carries_the_retry_stamp(
    server: Server, tmp_path: Path
) -> None:
    def refuse(iq: domish.Element) -> domish.Element:
        retry = domish.Element((NS_UPLOAD, "retry"))
        retry["stamp"] = "2030-01-02T03:04:05Z"
        raise StanzaError(
            "resource-constraint", "wait", "Quota reached", appCondition=retry
        )

    world = make_world(server, items=(SCRIPTED,), answer=refuse)
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(SlotRefused) as refused:
        await world.client.upload(path, domain=DOMAIN)
    assert refused.value.retry_at == 1893553445.0
    assert refused.value.server_text == "Quota reached"
    assert refused.value.max_file_size is None


@pytest_twisted.ensureDeferred
async def test_result_without_a_slot_is_a_protocol_error(
    server: Server, tmp_path: Path
) -> None:
    def nothing(iq: domish.Element) -> domish.Element:
        return domish.Element((NS_UPLOAD, "nothing"))

    world = make_world(server, items=(SCRIPTED,), answer=nothing)
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(ProtocolError, match="without a slot"):
        await world.client.upload(path, domain=DOMAIN)


@pytest_twisted.ensureDeferred
async def test_empty_file_is_refused_locally(world: World, tmp_path: Path) -> None:
    path = write_file(tmp_path, "empty", b"")
    with pytest.raises(UploadError, match="empty"):
        await world.client.upload(path, domain=DOMAIN)
    assert world.upload_log.received == []


@pytest_twisted.ensureDeferred
async def test_missing_file_is_an_os_error(world: World, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await world.client.upload(tmp_path / "nope", domain=DOMAIN)


# ---- HTTP: exactly the allowed headers, and failures


@pytest_twisted.ensureDeferred
async def test_put_sends_exactly_the_allowed_headers(
    server: Server, tmp_path: Path, recording: tuple[Recording, str]
) -> None:
    resource, base = recording
    headers = [
        ("Authorization", "Bearer one\n"),
        ("X-Evil", "1"),
        ("cookie", "a=1"),
        ("Host", "elsewhere"),
        ("Cookie", "b=2"),
        ("EXPIRES", "0"),
        ("Content-Length", "1"),
    ]
    world = make_world(
        server,
        items=(SCRIPTED,),
        answer=slot_answer(base + "put/n.txt", base + "get/n.txt", headers),
    )
    path = write_file(tmp_path, "n.txt", b"hi there")
    url = await world.client.upload(path, domain=DOMAIN)
    assert url == base + "get/n.txt"
    [(received, body)] = resource.requests
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


@pytest_twisted.ensureDeferred
async def test_put_of_an_untyped_slot_says_octet_stream(
    server: Server, tmp_path: Path, recording: tuple[Recording, str]
) -> None:
    """A file of no known type: the PUT names application/octet-stream, the type a
    direct-mode (presigned S3) slot without a type binds, so it is not refused."""
    resource, base = recording
    world = make_world(
        server,
        items=(SCRIPTED,),
        answer=slot_answer(base + "put/n.qqq", base + "get/n.qqq", []),
    )
    path = write_file(tmp_path, "n.qqq", b"no type")
    await world.client.upload(path, domain=DOMAIN)
    [(received, _body)] = resource.requests
    assert dict(received)[b"Content-Type"] == [b"application/octet-stream"]


@pytest.mark.parametrize("size", [5, 3 * 1024 * 1024], ids=["small", "3MiB"])
@pytest_twisted.ensureDeferred
async def test_http_error_carries_status_and_body(
    server: Server, tmp_path: Path, size: int
) -> None:
    """A PUT the site refuses (a forged token): HttpError with its text.

    A large body is refused from the headers, before it is sent: the answer
    still arrives as the error, not as a broken connection.
    """
    world = make_world(
        server,
        items=(SCRIPTED,),
        answer=slot_answer(
            server.base + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/a.txt?token=secret",
            server.base + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/a.txt",
            [("Authorization", "Bearer v1.forged.token")],
        ),
    )
    path = write_file(tmp_path, "a.txt", b"h" * size)
    with pytest.raises(HttpError) as failed:
        await world.client.upload(path, domain=DOMAIN)
    error = failed.value
    assert error.status == 403
    assert error.body.strip()
    assert error.body.strip() in str(error)
    assert "secret" not in str(error)  # the query (a token) is not repeated


@pytest_twisted.ensureDeferred
async def test_second_put_of_a_slot_is_an_http_conflict(
    world: World, server: Server, tmp_path: Path
) -> None:
    path = write_file(tmp_path, "twice.txt", b"hello")
    service = await world.client.discover(DOMAIN)
    slot = await world.client.request_slot(service, "twice.txt", 5, "text/plain")
    with open(path, "rb") as file:
        await world.client.put(slot, file)
    with open(path, "rb") as file, pytest.raises(HttpError) as failed:
        await world.client.put(slot, file)
    assert failed.value.status == 409


@pytest_twisted.ensureDeferred
async def test_refused_connection_is_a_transfer_failure(
    server: Server, tmp_path: Path
) -> None:
    closed = global_reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
    port = closed.getHost().port
    await closed.stopListening()
    world = make_world(
        server,
        items=(SCRIPTED,),
        answer=slot_answer(f"http://127.0.0.1:{port}/a", "http://x/a", []),
    )
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(TransferFailed, match="refused"):
        await world.client.upload(path, domain=DOMAIN)


@pytest_twisted.ensureDeferred
async def test_a_stalled_put_is_given_up(
    server: Server, tmp_path: Path, recording: tuple[Recording, str]
) -> None:
    resource, base = recording
    resource.hold = True
    world = make_world(
        server,
        items=(SCRIPTED,),
        answer=slot_answer(base + "a", base + "a", []),
        idle_timeout=0.3,
    )
    path = write_file(tmp_path, "a.txt", b"hello")
    with pytest.raises(TransferFailed, match=r"no progress for 0\.3 s"):
        await world.client.upload(path, domain=DOMAIN)


@pytest_twisted.ensureDeferred
async def test_any_2xx_is_success(
    server: Server, tmp_path: Path, recording: tuple[Recording, str]
) -> None:
    resource, base = recording
    resource.code, resource.body = 200, b"fine"
    world = make_world(
        server, items=(SCRIPTED,), answer=slot_answer(base + "a", base + "g", [])
    )
    path = write_file(tmp_path, "a.bin", b"\0" * 10)
    assert await world.client.upload(path, domain=DOMAIN) == base + "g"


def test_slot_is_a_plain_value() -> None:
    slot = Slot("https://u/p", "https://u/g", (("Cookie", "a"),), "p", 1, None)
    assert slot.headers == (("Cookie", "a"),)


# ---- the command, against a server that never speaks


def test_command_interrupted_or_timed_out(tmp_path: Path) -> None:
    """Ctrl-C: status 130, "interrupted"; a silent server: 3 after --timeout."""
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "f.txt").write_text("x")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        listener.settimeout(30)
        command = [
            sys.executable, "-m", "httpupload.send",
            "--jid", "a@example.org", "--password-file", str(tmp_path / "pw"),
            "--server", f"127.0.0.1:{listener.getsockname()[1]}",
            str(tmp_path / "f.txt"),
        ]  # fmt: skip
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(30)
            connection.recv(1024)  # its stream header: it waits for ours now
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        assert process.returncode == 130
        assert err == "httpupload-send: interrupted\n"

        result = subprocess.run(
            [*command, "--timeout", "0.5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 3
        assert result.stderr.startswith("httpupload-send: no login within 0.5 s")
        assert result.stdout == ""
