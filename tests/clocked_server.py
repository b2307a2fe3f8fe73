"""A real ``UploadSite`` on a loopback port whose timers run on a ``Clock``.

The sockets are real (sendfile and TLS need them), but everything the site
times (idle timeout, header timeout, the downloads' write timeout) is driven
by the test advancing ``server.clock``.  Files are stored straight through
the storage, so any stored info can be served, whatever slots would allow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.web.client import HTTPConnectionPool
from webserver import Server

from httpupload.slots import SlotSigner, new_file_id, url_path
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

START = 1_700_000_000.0


async def start_clocked_server(
    tmp_path: Path, endpoint: str = "tcp:0:interface=127.0.0.1", **site_options: Any
) -> Server:
    """A site listening on ``endpoint`` (on the real reactor), timed by a Clock."""
    clock = Clock()
    clock.advance(START)
    storage = FilesystemStorage(
        tmp_path / "store", global_reactor, global_reactor.getThreadPool()
    )
    storage.prepare()
    signer = SlotSigner(b"k" * 32, clock)
    receiver = UploadReceiver(signer, storage, clock)
    site = UploadSite(receiver, storage, clock, **site_options)
    port = await serverFromString(global_reactor, endpoint).listen(site)
    number = port.getHost().port
    scheme = "https" if endpoint.startswith("ssl:") else "http"
    return Server(
        f"{scheme}://127.0.0.1:{number}/",
        number,
        signer,
        clock,
        storage,
        HTTPConnectionPool(global_reactor, persistent=False),
        receiver,
        site,
        port,
    )


async def store_file(
    server: Server,
    data: bytes,
    name: str = "file.bin",
    content_type: str = "application/octet-stream",
    **info: Any,
) -> tuple[FileInfo, str]:
    """Store ``data`` under ``name`` with the info given; its info and GET path."""
    file_id = new_file_id()
    stored = FileInfo(
        **{
            "file_id": file_id,
            "filename": name,
            "size": len(data),
            "content_type": content_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": START - 10,
            **info,
        }
    )
    pending = server.storage.begin_write(file_id)
    pending.write(data)
    await pending.commit(stored)
    return stored, "/" + url_path(file_id, name)
