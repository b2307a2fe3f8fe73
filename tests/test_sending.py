"""Downloads over plain TCP go through sendfile: whole, in ranges, slow, cut off.

The sender watches a duplicate of the socket's descriptor and writes behind
the transport's back, so what matters is: the head first, every byte once,
the connection reusable afterwards, and nothing left open when a client
goes away.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from webserver import Server, start_server

from httpupload.storage import sending

# Real loopback sockets: the kernel's sendfile into a TCP socket is the point.
pytestmark = pytest.mark.enable_socket

SIZE = 6 * 1024 * 1024 + 123
DATA = os.urandom(SIZE)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path)
    yield s
    s.listening.stopListening()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _read_response(sock: socket.socket, slow: bool = False) -> tuple[bytes, bytes]:
    """One response (head, body) by Content-Length, leaving the socket open."""
    buffered = b""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the head"
        buffered += chunk
    head, body = buffered.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        if slow:
            time.sleep(0.002)
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the end of the body"
        body += chunk
    return head, body


def _two_gets_on_one_connection(port: int, path: str) -> list[tuple[bytes, bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = _read_response(sock, slow=True)
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-1999\r\n\r\n".encode()
        )
        return [first, _read_response(sock)]


def _read_part_and_leave(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 300_000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    return got


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_gets_every_byte_then_the_next_response(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head before body, all bytes in order, and keep-alive still works after."""
    used: list[sending.SendfileSender] = []
    original = sending.SendfileSender.start

    def start(self: sending.SendfileSender) -> None:
        used.append(self)
        original(self)

    monkeypatch.setattr(sending.SendfileSender, "start", start)
    url = await server.put(DATA, name="big.bin")
    path = url[len(server.base) - 1 :]
    (head, body), (head2, body2) = await deferToThread(
        _two_gets_on_one_connection, server.port, path
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == DATA
    assert head2.startswith(b"HTTP/1.1 206 ")
    assert body2 == DATA[1000:2000]
    assert len(used) == 2  # both went through sendfile


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_midway_leaves_nothing_open(server: Server) -> None:
    """The duplicate descriptor and the file are closed; the server goes on."""
    url = await server.put(DATA, name="big.bin")
    path = url[len(server.base) - 1 :]
    before = _open_fds()
    got = await deferToThread(_read_part_and_leave, server.port, path)
    assert 0 < got < SIZE
    for _ in range(100):
        if _open_fds() <= before:
            break
        await _sleep(0.05)
    assert _open_fds() <= before
    response, body = await server.request("GET", url)
    assert (response.code, body) == (200, DATA)


async def _sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)
