"""Ask the router of docs/examples/httpupload.tac for an upload slot.

    python docs/examples/request_slot.py FILENAME SIZE [CONTENT_TYPE]

Twisted ships no client (c2s) listener for an XMPP server, so this stands in
for a user's client and their server's c2s side at once: it connects to the
tac's component port (XEP-0114) as the user domain example.org, which the
router trusts to address its own stanzas, asks upload.example.org for a slot
as romeo@example.org/example, and prints the slot as one line of JSON::

    {"put": URL, "headers": {NAME: VALUE}, "get": URL}

PUT the file to ``put`` with ``headers`` (and Content-Length: SIZE), then
GET ``get``.  A refusal is printed as ``{"error": CONDITION, "text": ...}``
with exit status 1.  It reads the tac's ``HTTPUPLOAD_EXAMPLE_COMPONENT_PORT``
[5347] and ``HTTPUPLOAD_EXAMPLE_SECRET`` [example-secret].
"""

import httpupload  # noqa: F401, I001  (first: makes wokkel importable)

import json
import os
import sys

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import component, generic
from wokkel.subprotocols import XMPPHandler

NS_UPLOAD = "urn:xmpp:http:upload:0"
USER_DOMAIN = "example.org"
UPLOAD_JID = "upload.example.org"
REQUESTER = "romeo@example.org/example"
PORT = int(os.environ.get("HTTPUPLOAD_EXAMPLE_COMPONENT_PORT", "5347"))
SECRET = os.environ.get("HTTPUPLOAD_EXAMPLE_SECRET", "example-secret")


class SlotRequest(generic.Request):
    """An XEP-0363 slot request, as a client sends it."""

    def __init__(self, filename: str, size: int, content_type: str | None) -> None:
        super().__init__(
            recipient=JID(UPLOAD_JID), sender=JID(REQUESTER), stanzaType="get"
        )
        self.filename = filename
        self.size = size
        self.content_type = content_type

    def toElement(self) -> domish.Element:
        element: domish.Element = super().toElement()
        request = element.addElement((NS_UPLOAD, "request"))
        request["filename"] = self.filename
        request["size"] = str(self.size)
        if self.content_type:
            request["content-type"] = self.content_type
        return element


class Asker(XMPPHandler):
    """Sends one slot request once the link is up; ``answer`` fires with the reply."""

    def __init__(self, request: SlotRequest) -> None:
        super().__init__()
        self.slot_request = request
        self.answer: defer.Deferred[domish.Element] = defer.Deferred()

    def connectionInitialized(self) -> None:
        self.request(self.slot_request).chainDeferred(self.answer)


def slot_of(reply: domish.Element) -> dict[str, object]:
    """The put URL, its headers and the get URL of a slot reply."""
    slot = next(reply.elements(NS_UPLOAD, "slot"))
    put = next(slot.elements(NS_UPLOAD, "put"))
    get = next(slot.elements(NS_UPLOAD, "get"))
    headers = {h["name"]: str(h) for h in put.elements(NS_UPLOAD, "header")}
    return {"put": put["url"], "headers": headers, "get": get["url"]}


async def main(reactor: IReactorCore, argv: list[str]) -> None:
    filename, size = argv[1], int(argv[2])
    content_type = argv[3] if len(argv) > 3 else None
    link = component.Component("127.0.0.1", PORT, USER_DOMAIN, SECRET)
    asker = Asker(SlotRequest(filename, size, content_type))
    asker.setHandlerParent(link)
    link.startService()
    try:
        reply = await asker.answer
    except StanzaError as e:
        print(json.dumps({"error": e.condition, "text": e.text}))
        raise SystemExit(1) from None
    finally:
        link.stopService()
    print(json.dumps(slot_of(reply)))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv)))
