"""Embedding: the upload handler inside an existing Twisted XMPP process.

The same handler set the external component runs, mounted as a wokkel
``InternalComponent`` on an in-process ``Router``, answering a client that is
another component on the same router, exactly as docs/embedding.md shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import treq
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import component, disco, generic
from wokkel.subprotocols import XMPPHandler

from httpupload import SlotPolicy, SlotSigner, UploadHandler
from httpupload.embed import adopt, adopted, mount
from httpupload.storage.memory import MemoryStorage
from httpupload.testing import OWNER, START, TEST_KEY, Wire
from httpupload.web.resource import UploadResource
from httpupload.web.uploads import UploadReceiver
from httpupload.xmpp.stanzas import NS_UPLOAD


class Recorder(XMPPHandler):
    """Plays the user's side: collects every stanza routed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[domish.Element] = []
        self._waiting: list[Deferred[domish.Element]] = []

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/iq", self._got)

    def _got(self, iq: domish.Element) -> None:
        self.received.append(iq)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(iq)

    def reply(self) -> Deferred[domish.Element]:
        """The first stanza received: now, or when it arrives."""
        if self.received:
            return succeed(self.received[0])
        d: Deferred[domish.Element] = Deferred()
        self._waiting.append(d)
        return d


def test_upload_handler_as_internal_component() -> None:
    """Disco and a slot request, routed in-process, get the same answers."""
    clock = Clock()
    router = component.Router()
    upload = component.InternalComponent(router, "upload.example.org")
    for handler in (
        generic.FallbackHandler(),
        disco.DiscoHandler(),
        UploadHandler(
            SlotPolicy(1024, ("example.org",)),
            SlotSigner(b"k" * 32, clock),
            "https://upload.example.org/",
            "https://upload.example.org/",
            300,
        ),
    ):
        handler.setHandlerParent(upload)
    users = component.InternalComponent(router, "example.org")
    recorder = Recorder()
    recorder.setHandlerParent(users)
    upload.startService()
    users.startService()

    info = domish.Element((None, "iq"))
    info["type"], info["id"] = "get", "1"
    info["from"], info["to"] = "romeo@example.org/phone", "upload.example.org"
    info.addElement((disco.NS_DISCO_INFO, "query"))
    users.send(info)

    request = domish.Element((None, "iq"))
    request["type"], request["id"] = "get", "2"
    request["from"], request["to"] = "romeo@example.org/phone", "upload.example.org"
    slot_request = request.addElement((NS_UPLOAD, "request"))
    slot_request["filename"], slot_request["size"] = "photo.jpg", "1000"
    users.send(request)

    too_big = request
    too_big["id"] = "3"
    slot_request["size"] = "1025"
    users.send(too_big)

    replies = {iq["id"]: iq for iq in recorder.received}
    assert set(replies) == {"1", "2", "3"}
    features = {
        f["var"] for f in replies["1"].query.elements(disco.NS_DISCO_INFO, "feature")
    }
    assert NS_UPLOAD in features
    assert replies["2"]["type"] == "result"
    assert replies["2"].slot.get["url"].endswith("/photo.jpg")
    assert JID(replies["2"]["from"]) == JID("upload.example.org")
    assert replies["3"]["type"] == "error"
    assert replies["3"].error.firstChildElement().name == "not-acceptable"


def load_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run docs/examples/httpupload.tac's code: storage in tmp_path, ports free."""
    monkeypatch.chdir(tmp_path)
    # The example's own knobs (its docstring): any free port, our folder.
    monkeypatch.setenv("HTTPUPLOAD_EXAMPLE_WEB_PORT", "0")
    monkeypatch.setenv("HTTPUPLOAD_EXAMPLE_COMPONENT_PORT", "0")
    monkeypatch.setenv("HTTPUPLOAD_EXAMPLE_STORAGE", str(tmp_path / "storage"))
    source = (Path(__file__).parent.parent / "docs/examples/httpupload.tac").read_text()
    namespace: dict[str, Any] = {"__name__": "tac"}
    exec(compile(source, "httpupload.tac", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_tac_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .tac example: a slot from the router, then PUT and GET on the host Site."""
    example = load_example(tmp_path, monkeypatch)
    app_services = IServiceCollection(example["application"])
    for child in app_services:
        child.privilegedStartService()
        child.startService()
    # The example's Site on a port of our own, read back from the port itself
    # (its own listener is on a free port too, which the service keeps to itself).
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    listening = await endpoint.listen(example["site"])
    try:
        users = component.InternalComponent(example["router"], "example.org")
        recorder = Recorder()
        recorder.setHandlerParent(users)
        users.startService()
        iq = domish.Element((None, "iq"))
        iq["type"], iq["id"] = "get", "s1"
        iq["from"], iq["to"] = "romeo@example.org/x", "upload.example.org"
        request = iq.addElement((NS_UPLOAD, "request"))
        request["filename"], request["size"] = "hello.txt", "5"
        users.send(iq)
        reply = await recorder.reply()
        assert len(recorder.received) == 1
        put_url = reply.slot.put["url"]
        get_url = reply.slot.get["url"]
        token = str(next(reply.slot.put.elements(NS_UPLOAD, "header")))
        real = f"http://127.0.0.1:{listening.getHost().port}/upload/"
        put_url = put_url.replace(example["PUBLIC_URL"], real)
        get_url = get_url.replace(example["PUBLIC_URL"], real)
        auth: dict[bytes | str, bytes | str] = {"Authorization": token}
        response = await treq.put(put_url.split("?")[0], data=b"hello", headers=auth)
        assert response.code == 201, await response.text()
        response = await treq.get(get_url)
        assert await response.content() == b"hello"
    finally:
        await listening.stopListening()
        for child in app_services:
            await maybeDeferred(child.stopService)


def host_site(
    adopt_it: bool,
) -> tuple[Wire, SlotSigner, UploadReceiver, list[LogEvent]]:
    """A host's plain ``Site`` on the in-memory wire, the upload resource at /files/,
    and what mounting it logged."""
    clock = MemoryReactorClock()
    clock.advance(START)
    storage = MemoryStorage()
    signer = SlotSigner(TEST_KEY, clock)
    receiver = UploadReceiver(signer, storage, clock)
    site = Site(Resource(), reactor=clock)
    if adopt_it:
        assert not adopted(site)
        adopt(site, receiver)
    with capturedLogs() as events:
        mount(site, b"files", UploadResource(storage, receiver=receiver))
    site.doStart()
    return (
        Wire(site, clock, base="http://host.example/"),
        signer,
        receiver,
        list(events),
    )


def mint(signer: SlotSigner) -> tuple[str, str]:
    """A slot's path under /files/ and its token."""
    slot, token = signer.mint("a.txt", 5, "text/plain", OWNER, 300)
    return f"/files/{slot.path}", token


def test_host_site_without_adoption() -> None:
    """A host Site keeping its own request class: uploads work, with a warning."""
    wire, signer, receiver, events = host_site(adopt_it=False)
    assert any("own request class" in formatEvent(e) for e in events)
    path, token = mint(signer)
    put = wire.request("PUT", f"{path}?token={token}", data=b"hello")
    assert put.code == 201, put.body
    assert wire.request("GET", path).body == b"hello"
    assert wire.request("PUT", path, data=b"other").code == 403
    assert receiver.in_flight == 0


def test_adopt_gives_the_host_site_our_classes() -> None:
    """After adopt(), the host Site streams bodies and refuses from the headers."""
    wire, signer, receiver, events = host_site(adopt_it=True)
    assert adopted(cast(Site, wire.factory))
    assert not any("own request class" in formatEvent(e) for e in events)
    path, token = mint(signer)
    refused = wire.send(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Authorization: Bearer forged\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    assert refused.status == 403
    assert b"100 Continue" not in refused.received
    headers = {"Authorization": f"Bearer {token}"}
    put = wire.request("PUT", path, data=b"hello", headers=headers)
    assert put.code == 201, put.body
    assert wire.request("GET", path).body == b"hello"
    assert receiver.in_flight == 0
