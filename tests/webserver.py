"""A real ``UploadSite`` on a loopback port, and helpers to talk to it."""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor as global_reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.web.client import HTTPConnectionPool

from httpupload.slots import Slot, SlotSigner
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

OWNER = "romeo@montague.tld"


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

    async def request(self, method: str, url: str, **kwargs: Any):  # type: ignore[no-untyped-def]
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
    clock = Clock()
    clock.advance(1_700_000_000)
    storage = FilesystemStorage(
        tmp_path / "store", global_reactor, global_reactor.getThreadPool()
    )
    storage.prepare()
    signer = SlotSigner(b"k" * 32, clock)
    receiver = UploadReceiver(
        signer, storage, clock, max_uploads_per_address=max_uploads_per_address
    )
    site = UploadSite(receiver, storage, global_reactor, **site_options)
    port = global_reactor.listenTCP(0, site, interface="127.0.0.1")
    pool = HTTPConnectionPool(global_reactor, persistent=False)
    number = port.getHost().port
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


def header(response, name: str) -> str | None:  # type: ignore[no-untyped-def]
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def digest_of(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def assert_common_headers(response) -> None:  # type: ignore[no-untyped-def]
    assert header(response, "Access-Control-Allow-Origin") == "*"
    assert "PUT" in header(response, "Access-Control-Allow-Methods")
    assert "Authorization" in header(response, "Access-Control-Allow-Headers")
    for exposed in ("ETag", "Repr-Digest", "Content-Range", "Content-Length"):
        assert exposed in header(response, "Access-Control-Expose-Headers")
    assert header(response, "Content-Security-Policy") == (
        "default-src 'none'; frame-ancestors 'none'"
    )
    assert header(response, "X-Content-Type-Options") == "nosniff"
    assert header(response, "Referrer-Policy") == "no-referrer"


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
