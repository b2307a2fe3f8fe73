"""Embedding: the upload handler inside an existing Twisted XMPP process.

The same handler set the external component runs, mounted as a wokkel
``InternalComponent`` on an in-process ``Router``, answering a client that is
another component on the same router, exactly as docs/embedding.md shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import component, disco, generic
from wokkel.subprotocols import XMPPHandler

from httpupload import FilesystemStorage, SlotPolicy, SlotSigner, UploadHandler
from httpupload.embed import adopt, adopted, mount
from httpupload.web.resource import UploadResource
from httpupload.web.uploads import UploadReceiver
from httpupload.xmpp.stanzas import NS_UPLOAD


class Recorder(XMPPHandler):
    """Plays the user's side: collects every stanza routed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[domish.Element] = []

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/iq", self.received.append)


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
    """Run docs/examples/httpupload.tac's code, storage in tmp_path, port free."""
    monkeypatch.chdir(tmp_path)
    source = (Path(__file__).parent.parent / "docs/examples/httpupload.tac").read_text()
    source = source.replace("WEB_PORT = 8080", "WEB_PORT = 0")
    namespace: dict[str, Any] = {"__name__": "tac"}
    exec(compile(source, "httpupload.tac", "exec"), namespace)  # noqa: S102
    return namespace


@pytest_twisted.ensureDeferred
async def test_tac_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .tac example: a slot from the router, then PUT and GET on the host Site."""
    example = load_example(tmp_path, monkeypatch)
    app_services = IServiceCollection(example["application"])
    for child in app_services:
        child.privilegedStartService()
        child.startService()
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
        (reply,) = recorder.received
        put_url = reply.slot.put["url"]
        get_url = reply.slot.get["url"]
        token = str(next(reply.slot.put.elements(NS_UPLOAD, "header")))
        port = [c for c in app_services if isinstance(c, StreamServerEndpointService)]
        listening = await port[0]._waitingForPort
        real = f"http://127.0.0.1:{listening.getHost().port}/upload/"
        put_url = put_url.replace(example["PUBLIC_URL"], real)
        get_url = get_url.replace(example["PUBLIC_URL"], real)
        response = await treq.put(
            put_url.split("?")[0], data=b"hello", headers={"Authorization": token}
        )
        assert response.code == 201, await response.text()
        response = await treq.get(get_url)
        assert await response.content() == b"hello"
    finally:
        for child in app_services:
            await maybeDeferred(child.stopService)


@pytest_twisted.ensureDeferred
async def test_host_site_without_adoption(tmp_path: Path) -> None:
    """A host Site keeping its own request class: uploads work, with a warning."""
    clock = Clock()
    clock.advance(1_700_000_000)
    storage = FilesystemStorage(tmp_path / "s", reactor, reactor.getThreadPool())
    storage.prepare()
    signer = SlotSigner(b"k" * 32, clock)
    receiver = UploadReceiver(signer, storage, clock)
    site = Site(Resource())
    with capturedLogs() as events:
        mount(site, b"files", UploadResource(storage, receiver=receiver))
    assert any("own request class" in formatEvent(e) for e in events)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/files/"
    try:
        slot, token = signer.mint("a.txt", 5, "text/plain", "r@example.org", 300)
        response = await treq.put(base + slot.path + f"?token={token}", data=b"hello")
        assert response.code == 201, await response.text()
        response = await treq.get(base + slot.path)
        assert await response.content() == b"hello"
        response = await treq.put(base + slot.path, data=b"other")
        assert response.code == 403
        assert receiver.in_flight == 0
    finally:
        await port.stopListening()


def test_adopt_gives_the_host_site_our_classes(tmp_path: Path) -> None:
    """After adopt(), the host Site streams bodies and refuses from the headers."""
    storage = FilesystemStorage(tmp_path / "s", reactor, reactor.getThreadPool())
    receiver = UploadReceiver(SlotSigner(b"k" * 32, Clock()), storage, Clock())
    site = Site(Resource())
    assert not adopted(site)
    adopt(site, receiver)
    assert adopted(site)
    with capturedLogs() as events:
        mount(site, b"files", UploadResource(storage, receiver=receiver))
    assert not any("own request class" in formatEvent(e) for e in events)
