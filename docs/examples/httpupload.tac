"""httpupload inside an existing Twisted XMPP server: a wokkel router.

Run with ``twistd -ny docs/examples/httpupload.tac``.  It builds what a
Twisted XMPP server would have:

- a wokkel ``Router`` (the core that routes stanzas between domains) with a
  component port (XEP-0114) on 127.0.0.1:5347, where external components
  connect; a real server also has client (c2s) and server (s2s) listeners,
  which Twisted does not ship;
- httpupload as an in-process component of that router (upload.example.org),
  with its whole handler set: disco, the slot handler with quotas and
  metrics, the owners' ad-hoc commands;
- the deployment's own web ``Site`` on 127.0.0.1:8080 with the upload
  resource mounted at ``/upload/``.

To ask for a slot as shipped, run ``python docs/examples/request_slot.py
hello.txt 5`` beside it: it connects to the component port as the user
domain example.org (standing in for the c2s side, which the router trusts to
address its stanzas), asks as romeo@example.org and prints the slot as JSON;
then PUT the file to the slot's put URL with its headers and GET it back.

Set by environment variables (defaults in brackets): ``HTTPUPLOAD_EXAMPLE_WEB_PORT``
[8080] and ``HTTPUPLOAD_EXAMPLE_COMPONENT_PORT`` [5347] (0: any free port, logged
as "... starting on N"), ``HTTPUPLOAD_EXAMPLE_PUBLIC_URL``
[http://127.0.0.1:<web port>/upload/], ``HTTPUPLOAD_EXAMPLE_STORAGE``
[httpupload-example-storage, in the current folder] and
``HTTPUPLOAD_EXAMPLE_SECRET`` [example-secret, the component port's secret].
tests/integration/test_tac_example.py runs it this way.
"""

import httpupload  # noqa: F401, I001  (first: makes wokkel importable)

import os
from pathlib import Path

from twisted.application import service, strports
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site
from wokkel import component

from httpupload import parse_config
from httpupload.assembly import attach_handlers, open_node
from httpupload.embed import adopt, mount

DOMAIN = "example.org"
UPLOAD_JID = "upload.example.org"
WEB_PORT = int(os.environ.get("HTTPUPLOAD_EXAMPLE_WEB_PORT", "8080"))
COMPONENT_PORT = int(os.environ.get("HTTPUPLOAD_EXAMPLE_COMPONENT_PORT", "5347"))
PUBLIC_URL = os.environ.get(
    "HTTPUPLOAD_EXAMPLE_PUBLIC_URL", f"http://127.0.0.1:{WEB_PORT}/upload/"
)
STORAGE = Path(os.environ.get("HTTPUPLOAD_EXAMPLE_STORAGE", "httpupload-example-storage"))
SECRET = os.environ.get("HTTPUPLOAD_EXAMPLE_SECRET", "example-secret")
SIGNING_KEY = "replace me with 32 or more random bytes!!"

# The same settings as a TOML file would give (docs/configuration.md), as a
# mapping; every key left out has its documented default.
config = parse_config(
    {
        "component": {"jid": UPLOAD_JID, "secret": SECRET},
        "http": {"public_url": PUBLIC_URL, "signing_key": SIGNING_KEY},
        "storage": {"path": str(STORAGE)},
        "access": {"domains": [DOMAIN]},
        "metrics": {"listen": ""},
    },
    Path.cwd(),
)

application = service.Application("xmpp server with httpupload")

# httpupload's stores, signer, policy and expiry sweep; its service opens the
# stores before what uses them starts and closes them after it stopped.
node = open_node(config, reactor)
node.service.setServiceParent(application)

# The deployment's XMPP core, with a port for external components.
router = component.Router()
strports.service(
    f"tcp:{COMPONENT_PORT}:interface=127.0.0.1",
    component.XMPPComponentServerFactory(router, SECRET),
).setServiceParent(application)

# httpupload's handlers as an in-process component of that router.
upload_component = component.InternalComponent(router, UPLOAD_JID)
attach_handlers(upload_component, node)
upload_component.setServiceParent(node.serving)

# The deployment's own web site, with the upload resource under /upload/.
site = Site(Resource())
adopt(site, node.upload_receiver())  # streaming PUT bodies and early refusal
mount(site, b"upload", node.upload_resource())
strports.service(f"tcp:{WEB_PORT}:interface=127.0.0.1", site).setServiceParent(
    node.serving
)
