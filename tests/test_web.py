"""The HTTP side over real loopback sockets: PUT, GET, HEAD, OPTIONS and refusals."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from webserver import (
    Server,
    assert_common_headers,
    digest_of,
    header,
    raw_exchange,
    start_server,
)

from httpupload.web.site import access_log_line, redacted_path


@pytest_twisted.ensureDeferred
async def test_put_then_get_and_head(server: Server) -> None:
    """A PUT with the slot's headers is stored (201) and served by GET and HEAD."""
    data = "héllo wörld".encode()
    _slot, url, headers = server.mint("très cool.txt", len(data), "text/plain")
    assert url.endswith("/tr%C3%A8s%20cool.txt")
    response, body = await server.request(
        "PUT", url, data=data, headers={**headers, "Content-Type": "text/plain"}
    )
    assert response.code == 201, body
    assert header(response, "Repr-Digest") == digest_of(data)
    assert_common_headers(response)

    response, body = await server.request("GET", url)
    assert response.code == 200
    assert body == data
    assert header(response, "Content-Type") == "text/plain"
    assert response.length == len(data)  # treq takes Content-Length out of headers
    assert header(response, "Repr-Digest") == digest_of(data)
    assert_common_headers(response)

    response, body = await server.request("HEAD", url)
    assert response.code == 200
    assert body == b""
    assert header(response, "Content-Type") == "text/plain"
    # Conversations refuses a HEAD without Content-Length: read the raw reply.
    path = url[len(server.base) - 1 :]
    raw = await deferToThread(
        raw_exchange,
        server.port,
        f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        False,
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"\r\nContent-Length: {len(data)}\r\n".encode() in head + b"\r\n"
    assert rest == b""


@pytest_twisted.ensureDeferred
async def test_large_binary_round_trip(server: Server) -> None:
    """A file of several chunks comes back byte for byte."""
    data = bytes(range(256)) * 4096 * 3 + b"tail"
    _, url, headers = server.mint("blob.bin", len(data), None)
    response, body = await server.request("PUT", url, data=data, headers=headers)
    assert response.code == 201, body
    response, body = await server.request("GET", url)
    assert body == data
    assert header(response, "Content-Type") == "application/octet-stream"


@pytest_twisted.ensureDeferred
async def test_second_put_conflicts(server: Server) -> None:
    """A used slot answers 409 and the stored file stays as it was."""
    _, url, headers = server.mint(size=5)
    response, _ = await server.request("PUT", url, data=b"first", headers=headers)
    assert response.code == 201
    response, body = await server.request("PUT", url, data=b"other", headers=headers)
    assert response.code == 409
    assert body.strip()
    assert_common_headers(response)
    _, body = await server.request("GET", url)
    assert body == b"first"


@pytest_twisted.ensureDeferred
async def test_refused_puts(server: Server) -> None:
    """Missing, tampered, foreign and expired slots get 403; nothing is stored."""
    _slot, url, headers = server.mint(size=5)
    _other_slot, _other_url, other_headers = server.mint(size=5)
    token = headers["Authorization"].split(" ")[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    cases = [
        {},
        {"Authorization": "Bearer " + tampered},
        {"Authorization": "Basic " + token},
        other_headers,
    ]
    for case in cases:
        response, body = await server.request("PUT", url, data=b"hello", headers=case)
        assert response.code == 403, case
        assert body.strip()
        assert_common_headers(response)
    server.clock.advance(300)
    response, body = await server.request("PUT", url, data=b"hello", headers=headers)
    assert response.code == 403
    assert b"expired" in body
    response, _ = await server.request("GET", url)
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_length_and_type_checks(server: Server) -> None:
    """Content-Length must equal the slot size; Content-Type must match the slot's."""
    _, url, headers = server.mint(size=5, content_type="image/jpeg")
    response, body = await server.request("PUT", url, data=b"toolong", headers=headers)
    assert response.code == 400
    assert b"Content-Length" in body
    response, body = await server.request(
        "PUT", url, data=b"hello", headers={**headers, "Content-Type": "image/png"}
    )
    assert response.code == 400
    assert b"image/jpeg" in body
    # Same media type, other case and a parameter: accepted.
    response, _ = await server.request(
        "PUT",
        url,
        data=b"hello",
        headers={**headers, "Content-Type": "Image/JPEG; x=1"},
    )
    assert response.code == 201
    response, _ = await server.request("GET", url)
    assert header(response, "Content-Type") == "image/jpeg"


@pytest_twisted.ensureDeferred
async def test_put_without_content_type_takes_the_slots(server: Server) -> None:
    """A PUT with no Content-Type is stored with the slot's type."""
    _, url, headers = server.mint(size=3, content_type="audio/ogg")
    response, _ = await server.request("PUT", url, data=b"ogg", headers=headers)
    assert response.code == 201
    response, _ = await server.request("HEAD", url)
    assert header(response, "Content-Type") == "audio/ogg"


@pytest_twisted.ensureDeferred
async def test_cut_off_upload_leaves_nothing(server: Server) -> None:
    """A body that stops short is discarded; the same slot can be PUT again."""
    slot, url, headers = server.mint(size=100_000, content_type=None)
    head = (
        f"PUT /{slot.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        f"Authorization: {headers['Authorization']}\r\n\r\n"
    ).encode()
    await deferToThread(raw_exchange, server.port, head + b"x" * 50_000, True)
    tmp = server.storage.root / "tmp"
    for _ in range(100):
        if not any(tmp.iterdir()):
            break
        await deferLater(global_reactor, 0.02, lambda: None)
    assert not any(tmp.iterdir())
    response, _ = await server.request("GET", url)
    assert response.code == 404
    data = b"y" * 100_000
    response, _ = await server.request("PUT", url, data=data, headers=headers)
    assert response.code == 201
    _, body = await server.request("GET", url)
    assert body == data


@pytest_twisted.ensureDeferred
async def test_chunked_put_needs_a_length(server: Server) -> None:
    """A PUT without Content-Length (chunked) is refused with 411."""
    slot, _, headers = server.mint(size=5)
    request = (
        f"PUT /{slot.path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Connection: close\r\nAuthorization: {headers['Authorization']}\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n"
    ).encode()
    response = await deferToThread(raw_exchange, server.port, request, False)
    assert response.startswith(b"HTTP/1.1 411 ")


@pytest_twisted.ensureDeferred
async def test_not_found(server: Server) -> None:
    """Unknown ids, wrong names and paths that try to escape all give 404."""
    _, url, headers = server.mint(size=5)
    await server.request("PUT", url, data=b"hello", headers=headers)
    file_id = url.split("/")[-2]
    for path in [
        "nothing",
        f"{file_id}/b.txt",
        "A" * 32 + "/a.txt",
        f"{file_id}/../../etc/passwd",
        "..%2F..%2Fetc/passwd",
        f"{file_id[:2]}/{file_id}",
        f"{file_id}/data",
        f"{file_id}/info.json",
    ]:
        response, _body = await server.request("GET", server.base + path)
        assert response.code == 404, path
        assert_common_headers(response)


@pytest_twisted.ensureDeferred
async def test_options_and_other_methods(server: Server) -> None:
    """OPTIONS answers the CORS preflight; other methods get 405 with CORS."""
    _, url, _ = server.mint()
    response, _ = await server.request(
        "OPTIONS",
        url,
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.code in (200, 204)
    assert_common_headers(response)
    for method in ("POST", "DELETE", "PATCH"):
        response, _body = await server.request(method, url)
        assert response.code == 405
        assert "GET" in header(response, "Allow")
        assert_common_headers(response)


def test_access_log_hides_file_urls() -> None:
    """File URLs are capabilities: logs keep only a short prefix of the id."""
    path = b"/abcdefghijklmnopqrstuvwxyz0123/secret%20name.txt"
    assert redacted_path(path) == "/abcdef…/<name>"
    assert redacted_path(b"/robots.txt") == "/<other>"
    # Absolute-form targets and queries (a ?token=) are redacted the same way.
    assert redacted_path(b"http://h:80" + path + b"?token=xyz") == "/abcdef…/<name>"
    assert redacted_path(b"https://user:pw@h/x?token=xyz") == "/<other>"

    class FakeRequest:
        method = b"GET"
        uri = path + b"?token=xyz"
        clientproto = b"HTTP/1.1"
        code = 200
        sentLength = 10

        def getClientAddress(self):  # type: ignore[no-untyped-def]
            class Address:
                host = "192.0.2.1"

            return Address()

        def getHeader(self, name: bytes) -> bytes:
            return b'Conversations "2" \x1b[31m'

    line = access_log_line("[ts]", FakeRequest())  # type: ignore[arg-type]
    assert "secret" not in line
    assert "xyz" not in line
    assert "qrstuv" not in line
    assert line.startswith('192.0.2.1 - - [ts] "GET /abcdef…/<name> HTTP/1.1" 200 10')
    assert line.endswith(' "Conversations \\"2\\" \\x1b[31m"')


class _FullDisk:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, inner, room: int) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.room = inner, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.inner.write(data)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


@pytest_twisted.ensureDeferred
async def test_full_disk_answers_507_and_keeps_serving(server: Server) -> None:
    """ENOSPC mid-upload: 507, the partial file removed, the next upload works."""
    real_begin = server.storage.begin_write

    def begin_on_full_disk(file_id: str):  # type: ignore[no-untyped-def]
        upload = real_begin(file_id)
        upload._file = _FullDisk(upload._file, room=1000)
        return upload

    server.storage.begin_write = begin_on_full_disk  # type: ignore[method-assign]
    _, url, headers = server.mint(size=50_000, content_type=None)
    response, body = await server.request(
        "PUT", url, data=b"z" * 50_000, headers=headers
    )
    assert response.code == 507
    assert b"storage" in body.lower()
    assert_common_headers(response)
    assert list((server.storage.root / "tmp").iterdir()) == []
    response, _ = await server.request("GET", url)
    assert response.code == 404

    server.storage.begin_write = real_begin  # type: ignore[method-assign]
    response, _ = await server.request("PUT", url, data=b"z" * 50_000, headers=headers)
    assert response.code == 201


@pytest_twisted.ensureDeferred
async def test_post_with_hostile_content_type(server: Server) -> None:
    """A POST whose Content-Type holds a line separator gets 405, not a crash."""
    request = (
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data\x0b; boundary=a\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    response = await deferToThread(raw_exchange, server.port, request, False)
    assert response.startswith(b"HTTP/1.1 405 ")


@pytest_twisted.ensureDeferred
async def test_hsts_from_a_trusted_proxy_only(tmp_path: Path) -> None:
    """X-Forwarded-Proto: https gives HSTS only when the peer is a trusted proxy."""
    for trusted, expected in (((), None), (("127.0.0.1",), "max-age=31536000")):
        server = start_server(tmp_path / str(bool(trusted)), trusted_proxies=trusted)
        try:
            response, _ = await server.request(
                "GET", server.base + "nothing", headers={"X-Forwarded-Proto": "https"}
            )
            assert header(response, "Strict-Transport-Security") == expected
        finally:
            await server.listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_access_log_names_the_client_behind_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    """The access log shows X-Forwarded-For's client only from a trusted proxy."""
    for trusted, shown in (((), "127.0.0.1 - -"), (("127.0.0.1",), "203.0.113.9 - -")):
        server = start_server(tmp_path / str(bool(trusted)), trusted_proxies=trusted)
        try:
            with capturedLogs() as events:
                await server.request(
                    "GET", server.base + "x", headers={"X-Forwarded-For": "203.0.113.9"}
                )
            lines = [formatEvent(e) for e in events]
            assert any(line.startswith(shown) for line in lines), lines
        finally:
            await server.listening.stopListening()
