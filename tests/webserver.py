"""A real ``UploadSite`` on a loopback port (port 0), and helpers to talk to it.

For tests where the socket is the point (sendfile, TLS, a client library
over TCP); every other HTTP test runs in memory through ``httpupload.testing``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import treq
from helpers import assert_common_headers, digest_of, header
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.web.client import HTTPConnectionPool

from httpupload._reactor import running_reactor
from httpupload.slots import Slot, SlotSigner
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.testing import result_of
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

OWNER = "romeo@montague.tld"

__all__ = [
    "OWNER",
    "Server",
    "assert_common_headers",
    "digest_of",
    "header",
    "raw_exchange",
    "start_server",
]


@dataclass
class Server:
    base: str
    port: int
    signer: SlotSigner
    clock: Clock
    storage: FilesystemStorage
    pool: HTTPConnectionPool
    receiver: UploadReceiver
    site: UploadSite
    listening: IListeningPort

    def mint(
        self,
        name: str = "a.txt",
        size: int = 5,
        content_type: str | None = "text/plain",
    ) -> tuple[Slot, str, dict[str, str]]:
        """A slot, its PUT URL without the query token, and its headers."""
        slot, token = self.signer.mint(name, size, content_type, OWNER, lifetime=300)
        return slot, self.base + slot.path, {"Authorization": f"Bearer {token}"}

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        """A request through treq on the real reactor; the response and its body."""
        response = await treq.request(method, url, pool=self.pool, **kwargs)
        body = await response.content()
        return response, body

    async def put(self, data: bytes, name: str = "a.bin", **kwargs: Any) -> str:
        """Store ``data`` through a fresh slot; returns its GET URL."""
        _, url, headers = self.mint(name, len(data), None)
        response, body = await self.request("PUT", url, data=data, headers=headers)
        assert response.code == 201, body
        return url


def start_server(
    tmp_path: Path, max_uploads_per_address: int = 16, **site_options: Any
) -> Server:
    """An UploadSite listening on 127.0.0.1 port 0 (read back), slots on a Clock."""
    reactor = running_reactor()
    clock = Clock()
    clock.advance(1_700_000_000)
    storage = FilesystemStorage(tmp_path / "store", reactor, reactor.getThreadPool())
    storage.prepare()
    signer = SlotSigner(b"k" * 32, clock)
    receiver = UploadReceiver(
        signer, storage, clock, max_uploads_per_address=max_uploads_per_address
    )
    site = UploadSite(receiver, storage, reactor, **site_options)
    # A TCP endpoint listens at once: its Deferred has fired.
    port = result_of(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    pool = HTTPConnectionPool(reactor, persistent=False)
    number = cast(IPv4Address, port.getHost()).port
    return Server(
        f"http://127.0.0.1:{number}/",
        number,
        signer,
        clock,
        storage,
        pool,
        receiver,
        site,
        port,
    )


def raw_exchange(port: int, payload: bytes, close_early: bool) -> bytes:
    """Send raw bytes; return the response, or b'' when closing before one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        if close_early:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
