"""An UploadSite in a process of its own, for tests that block on sockets.

``python tests/fuzz_site.py STORAGE`` listens on a free loopback port, prints
``PORT <n>``, signs slots with the fixed test key, and logs to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

import httpupload  # noqa: F401  (the wokkel shim, like every entry point)
from httpupload.slots import SlotSigner
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

TEST_KEY = b"k" * 32


def main(storage_path: str) -> None:
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    storage = FilesystemStorage(Path(storage_path), reactor, reactor.getThreadPool())
    storage.prepare()
    receiver = UploadReceiver(SlotSigner(TEST_KEY, reactor), storage, reactor)
    site = UploadSite(receiver, storage, reactor, min_upload_rate=0)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
