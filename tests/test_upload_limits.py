"""The upload path under pressure: early refusals, limits, timeouts, drain."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from webserver import Server, start_server


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def put_head(server: Server, slot_path: str, length: int, *extra: str) -> bytes:
    lines = [f"PUT /{slot_path} HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> bytes:
    """Everything until the server closes, or the head and body of one answer."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"100 Continue" not in head.split(b"\r\n")[0]:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    if len(body) >= int(line.split(b":")[1]):
                        return data


def wait_closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await sleep(0.02)


@pytest_twisted.async_yield_fixture
async def limited(tmp_path: Path) -> AsyncIterator[Server]:
    """A site with one upload per address, tight timeouts and a rate floor."""
    running = start_server(
        tmp_path,
        max_uploads_per_address=1,
        idle_timeout=1.0,
        header_timeout=0.5,
        min_upload_rate=1_000_000,
    )
    yield running
    await running.listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_token_in_query_string(server: Server) -> None:
    """The token may ride in the URL; either carrier is accepted."""
    _slot, url, headers = server.mint(size=5)
    token = headers["Authorization"].removeprefix("Bearer ")
    response, _ = await server.request("PUT", f"{url}?token=x", data=b"hello")
    assert response.code == 403
    response, _ = await server.request(
        "PUT",
        f"{url}?token={token}",
        data=b"hello",
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.code == 201
    response, body = await server.request("GET", url)
    assert body == b"hello"
    _, other_url, other_headers = server.mint(size=3)
    other_token = other_headers["Authorization"].removeprefix("Bearer ")
    response, _ = await server.request(
        "PUT", f"{other_url}?token={other_token}", data=b"abc"
    )
    assert response.code == 201


def expect_exchange(server: Server, path: str, length: int, token: str) -> bytes:
    with connect(server) as sock:
        sock.sendall(
            put_head(
                server,
                path,
                length,
                f"Authorization: Bearer {token}",
                "Expect: 100-continue",
            )
        )
        return read_response(sock)


@pytest_twisted.ensureDeferred
async def test_refusal_without_100_continue(server: Server) -> None:
    """A PUT that will be refused gets its answer at once, never 100 Continue."""
    slot, _, headers = server.mint(size=5)
    token = headers["Authorization"].removeprefix("Bearer ")
    for length, bad_token in ((5, "forged"), (6, token)):
        answer = await deferToThread(
            expect_exchange, server, slot.path, length, bad_token
        )
        assert b"100 Continue" not in answer
        assert answer.startswith(
            b"HTTP/1.1 403 " if bad_token == "forged" else b"HTTP/1.1 400 "
        )
        assert b"Access-Control-Allow-Origin: *" in answer


def continue_exchange(server: Server, path: str, token: str) -> bytes:
    with connect(server) as sock:
        sock.sendall(
            put_head(
                server,
                path,
                5,
                f"Authorization: Bearer {token}",
                "Expect: 100-continue",
            )
        )
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        return read_response(sock)


@pytest_twisted.ensureDeferred
async def test_accepted_put_gets_100_continue(server: Server) -> None:
    """An acceptable PUT with Expect gets 100 Continue, then 201."""
    slot, _, headers = server.mint(size=5)
    token = headers["Authorization"].removeprefix("Bearer ")
    answer = await deferToThread(continue_exchange, server, slot.path, token)
    assert answer.startswith(b"HTTP/1.1 201 ")


def huge_refused(server: Server, path: str) -> tuple[bytes, float]:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(put_head(server, path, 10**12, "Authorization: Bearer nope"))
        return read_response(sock), time.monotonic() - started


@pytest_twisted.ensureDeferred
async def test_huge_refused_body_is_not_read(server: Server) -> None:
    """A refused PUT announcing a huge body is answered from its headers alone."""
    slot, _, _ = server.mint(size=5)
    answer, _ = await deferToThread(huge_refused, server, slot.path)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert list((server.storage.root / "tmp").iterdir()) == []


def hold_upload(server: Server, path: str, token: str, size: int) -> socket.socket:
    sock = connect(server)
    sock.sendall(put_head(server, path, size, f"Authorization: Bearer {token}"))
    sock.sendall(b"x" * (size // 2))
    return sock


@pytest_twisted.ensureDeferred
async def test_uploads_per_address_are_bounded(tmp_path: Path) -> None:
    """Over the per-address bound: 429; once the first finishes, room again."""
    server = start_server(tmp_path, max_uploads_per_address=1, min_upload_rate=0)
    try:
        first, _, first_headers = server.mint(size=1000)
        token = first_headers["Authorization"].removeprefix("Bearer ")
        sock = await deferToThread(hold_upload, server, first.path, token, 1000)
        await until(lambda: server.receiver.in_flight == 1)
        _, url, headers = server.mint(size=5)
        response, body = await server.request(
            "PUT", url, data=b"hello", headers=headers
        )
        assert response.code == 429
        assert b"1 uploads" in body
        sock.sendall(b"x" * 500)
        answer = await deferToThread(read_response, sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 201 ")
        response, _ = await server.request("PUT", url, data=b"hello", headers=headers)
        assert response.code == 201
    finally:
        await server.listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_drain_lets_uploads_finish_and_refuses_new_ones(server: Server) -> None:
    """Draining: new PUTs get 503; one in flight finishes and is stored."""
    slot, url, headers = server.mint(size=1000)
    token = headers["Authorization"].removeprefix("Bearer ")
    sock = await deferToThread(hold_upload, server, slot.path, token, 1000)
    await until(lambda: server.receiver.in_flight == 1)
    drained = server.receiver.drain(grace=30)
    assert not drained.called
    _, other, other_headers = server.mint(size=5)
    response, _ = await server.request(
        "PUT", other, data=b"hello", headers=other_headers
    )
    assert response.code == 503
    sock.sendall(b"x" * 500)
    answer = await deferToThread(read_response, sock)
    assert answer.startswith(b"HTTP/1.1 201 ")
    # The drain closes the connection once the answer is out, then finishes.
    assert await deferToThread(wait_closed, sock)
    sock.close()
    await until(lambda: drained.called)
    response, body = await server.request("GET", url)
    assert (response.code, len(body)) == (200, 1000)


@pytest_twisted.ensureDeferred
async def test_drain_cuts_off_after_the_grace_period(server: Server) -> None:
    """After the grace period, unfinished uploads are cut off and discarded."""
    slot, url, headers = server.mint(size=1000)
    token = headers["Authorization"].removeprefix("Bearer ")
    sock = await deferToThread(hold_upload, server, slot.path, token, 1000)
    await until(lambda: server.receiver.in_flight == 1)
    drained = server.receiver.drain(grace=5)
    server.clock.advance(5)
    await until(lambda: drained.called)
    assert await deferToThread(wait_closed, sock)
    sock.close()
    assert list((server.storage.root / "tmp").iterdir()) == []
    response, _ = await server.request("GET", url)
    assert response.code == 404


def slow_head(server: Server) -> bool:
    with connect(server) as sock:
        sock.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\n")
        for _ in range(30):
            time.sleep(0.1)
            try:
                sock.sendall(b"X-Slow: y\r\n")
            except OSError:
                return True
        return wait_closed(sock)


@pytest_twisted.ensureDeferred
async def test_slow_request_head_is_cut_off(limited: Server) -> None:
    """A head trickling in slower than the header timeout is dropped."""
    assert await deferToThread(slow_head, limited)


def slow_body(server: Server, path: str, token: str) -> bool:
    """Trickle a body, never idle for long; True if cut off while trickling."""
    with connect(server) as sock:
        sock.sendall(put_head(server, path, 100_000, f"Authorization: Bearer {token}"))
        for _ in range(40):
            time.sleep(0.1)
            try:
                sock.sendall(b"x" * 10)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        return True
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            except OSError:
                return True
        return False


@pytest_twisted.ensureDeferred
async def test_slow_upload_is_cut_off(limited: Server) -> None:
    """An upload below the minimum rate is cut off (though never idle for the
    idle timeout) and leaves nothing."""
    slot, _url, headers = limited.mint(size=100_000)
    token = headers["Authorization"].removeprefix("Bearer ")
    assert await deferToThread(slow_body, limited, slot.path, token)
    await until(lambda: limited.receiver.in_flight == 0)
    assert list((limited.storage.root / "tmp").iterdir()) == []


def many_headers(server: Server) -> bytes:
    with connect(server) as sock:
        extra = "".join(f"X-H{i}: v\r\n" for i in range(150))
        sock.sendall(f"GET /x HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        return read_response(sock)


@pytest_twisted.ensureDeferred
async def test_header_count_is_bounded(server: Server) -> None:
    """A request with too many headers is refused with 400."""
    answer = await deferToThread(many_headers, server)
    assert answer.startswith(b"HTTP/1.1 400 ")
