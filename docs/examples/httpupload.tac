"""httpupload inside an existing Twisted XMPP server: a wokkel router.

Run with ``twistd -ny docs/examples/httpupload.tac``: a wokkel Router (the
core of a Twisted XMPP server; a real one also has client and server-to-server
listeners), the upload service on it as an in-process component, and the
upload resource mounted at /upload/ of the deployment's own web Site.
tests/test_embedding.py loads this file and drives it in-process.
"""

import httpupload  # noqa: F401, I001  (first: makes wokkel importable)

from pathlib import Path

from twisted.application import service, strports
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
from wokkel import component, disco, generic

from httpupload import FilesystemStorage, SlotPolicy, SlotSigner, UploadHandler
from httpupload.embed import adopt, mount
from httpupload.web.resource import UploadResource
from httpupload.web.uploads import UploadReceiver

DOMAIN = "example.org"
UPLOAD_JID = "upload.example.org"
STORAGE = Path("httpupload-example-storage")
WEB_PORT = 8080
PUBLIC_URL = f"http://127.0.0.1:{WEB_PORT}/upload/"
SIGNING_KEY = b"replace me with 32 or more random bytes!!"

application = service.Application("xmpp server with httpupload")

# The deployment's XMPP core.
router = component.Router()

# httpupload's handlers as an in-process component of that router.
storage = FilesystemStorage(STORAGE, reactor, reactor.getThreadPool())
storage.prepare()
signer = SlotSigner(SIGNING_KEY, reactor)
upload_component = component.InternalComponent(router, UPLOAD_JID)
for handler in (
    generic.FallbackHandler(),
    disco.DiscoHandler(),
    UploadHandler(
        SlotPolicy(100 * 2**20, (DOMAIN,)), signer, PUBLIC_URL, PUBLIC_URL, 300
    ),
):
    handler.setHandlerParent(upload_component)
upload_component.setServiceParent(application)

# The deployment's own web site, with the upload resource under /upload/.
receiver = UploadReceiver(signer, storage, reactor)
site = Site(Resource())
adopt(site, receiver)  # streaming PUT bodies and early refusal
mount(site, b"upload", UploadResource(storage, receiver=receiver))
strports.service(f"tcp:{WEB_PORT}:interface=127.0.0.1", site).setServiceParent(
    application
)
