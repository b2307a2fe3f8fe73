"""An UploadSite in a process of its own, for tests that block on sockets.

``python tests/fuzz_site.py STORAGE`` listens on a free loopback port (port 0,
read back), prints ``PORT <n>``, signs slots with the fixed test key, and logs
to stdout.  It runs on the real reactor: it is a program, not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

import httpupload  # noqa: F401  (the wokkel shim, like every entry point)
from httpupload._reactor import running_reactor
from httpupload.slots import SlotSigner
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

TEST_KEY = b"k" * 32


def main(storage_path: str) -> None:
    """Serve until terminated."""
    reactor = running_reactor()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    storage = FilesystemStorage(Path(storage_path), reactor, reactor.getThreadPool())
    storage.prepare()
    receiver = UploadReceiver(SlotSigner(TEST_KEY, reactor), storage, reactor)
    site = UploadSite(receiver, storage, reactor, min_upload_rate=0)

    def listening(port: IListeningPort) -> None:
        print(f"PORT {cast(IPv4Address, port.getHost()).port}", flush=True)

    def failed(failure: Failure) -> None:
        print(failure.getTraceback(), flush=True)
        reactor.stop()

    d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    d.addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
