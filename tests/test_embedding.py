"""Embedding: the upload handler inside an existing Twisted XMPP process.

The same handler set the external component runs, mounted as a wokkel
``InternalComponent`` on an in-process ``Router``, answering a client that is
another component on the same router, exactly as docs/embedding.md shows.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import component, disco, generic
from wokkel.subprotocols import XMPPHandler

from httpupload import SlotPolicy, SlotSigner, UploadHandler
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
