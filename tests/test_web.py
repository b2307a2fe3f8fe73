"""The HTTP side in memory: PUT, GET, HEAD, OPTIONS and refusals, on our UploadSite."""

from __future__ import annotations

import pytest
from helpers import assert_common_headers, digest_of, header
from twisted.logger import capturedLogs, formatEvent

from httpupload.storage.memory import MemoryStorage
from httpupload.testing import Harness, make_harness
from httpupload.web.site import access_log_line, redacted_path


@pytest.fixture
def h() -> Harness:
    """Our UploadSite with default limits, on memory storage and a clock."""
    return make_harness()


def test_put_then_get_and_head(h: Harness) -> None:
    """A PUT with the slot's headers is stored (201) and served by GET and HEAD."""
    data = "héllo wörld".encode()
    slot = h.mint("très cool.txt", len(data), "text/plain")
    assert slot.url.endswith("/tr%C3%A8s%20cool.txt")
    response = h.request(
        "PUT",
        slot.url,
        data=data,
        headers={**slot.headers, "Content-Type": "text/plain"},
    )
    assert response.code == 201, response.body
    assert header(response, "Repr-Digest") == digest_of(data)
    assert_common_headers(response)

    response = h.request("GET", slot.url)
    assert response.code == 200
    assert response.body == data
    assert header(response, "Content-Type") == "text/plain"
    assert response.length == len(data)  # treq takes Content-Length out of headers
    assert header(response, "Repr-Digest") == digest_of(data)
    assert_common_headers(response)

    response = h.request("HEAD", slot.url)
    assert response.code == 200
    assert response.body == b""
    assert header(response, "Content-Type") == "text/plain"
    # Conversations refuses a HEAD without Content-Length: read the raw reply.
    raw = h.send(
        f"HEAD {slot.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert raw.head.startswith(b"HTTP/1.1 200 ")
    assert f"\r\nContent-Length: {len(data)}\r\n".encode() in raw.head + b"\r\n"
    assert raw.body == b""
    assert raw.closed


def test_large_binary_round_trip(h: Harness) -> None:
    """A file of several chunks comes back byte for byte."""
    data = bytes(range(256)) * 4096 * 3 + b"tail"
    slot = h.mint("blob.bin", len(data), None)
    response = h.request("PUT", slot.url, data=data, headers=slot.headers)
    assert response.code == 201, response.body
    response = h.request("GET", slot.url)
    assert response.body == data
    assert header(response, "Content-Type") == "application/octet-stream"


def test_second_put_conflicts(h: Harness) -> None:
    """A used slot answers 409 and the stored file stays as it was."""
    slot = h.mint(size=5)
    assert h.request("PUT", slot.url, data=b"first", headers=slot.headers).code == 201
    response = h.request("PUT", slot.url, data=b"other", headers=slot.headers)
    assert response.code == 409
    assert response.body.strip()
    assert_common_headers(response)
    assert h.request("GET", slot.url).body == b"first"


def test_refused_puts(h: Harness) -> None:
    """Missing, tampered, foreign and expired slots get 403; nothing is stored."""
    slot = h.mint(size=5)
    other = h.mint(size=5)
    token = slot.token
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    cases = [
        {},
        {"Authorization": "Bearer " + tampered},
        {"Authorization": "Basic " + token},
        other.headers,
    ]
    for case in cases:
        response = h.request("PUT", slot.url, data=b"hello", headers=case)
        assert response.code == 403, case
        assert response.body.strip()
        assert_common_headers(response)
    h.advance(300)
    response = h.request("PUT", slot.url, data=b"hello", headers=slot.headers)
    assert response.code == 403
    assert b"expired" in response.body
    assert h.request("GET", slot.url).code == 404
    assert h.storage.files == {}


def test_length_and_type_checks(h: Harness) -> None:
    """Content-Length must equal the slot size; Content-Type must match the slot's."""
    slot = h.mint(size=5, content_type="image/jpeg")
    response = h.request("PUT", slot.url, data=b"toolong", headers=slot.headers)
    assert response.code == 400
    assert b"Content-Length" in response.body
    response = h.request(
        "PUT",
        slot.url,
        data=b"hello",
        headers={**slot.headers, "Content-Type": "image/png"},
    )
    assert response.code == 400
    assert b"image/jpeg" in response.body
    # Same media type, other case and a parameter: accepted.
    response = h.request(
        "PUT",
        slot.url,
        data=b"hello",
        headers={**slot.headers, "Content-Type": "Image/JPEG; x=1"},
    )
    assert response.code == 201
    assert header(h.request("GET", slot.url), "Content-Type") == "image/jpeg"


def test_put_without_content_type_takes_the_slots(h: Harness) -> None:
    """A PUT with no Content-Type is stored with the slot's type."""
    slot = h.mint(size=3, content_type="audio/ogg")
    assert h.request("PUT", slot.url, data=b"ogg", headers=slot.headers).code == 201
    assert header(h.request("HEAD", slot.url), "Content-Type") == "audio/ogg"


def test_cut_off_upload_is_kept_unserved_and_replaced_by_a_new_put(
    h: Harness,
) -> None:
    """A body that stops short is kept to resume (#12), never served; a plain
    PUT of the same slot from 0 replaces it."""
    slot = h.mint(size=100_000, content_type=None)
    head = (
        f"PUT {slot.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        f"Authorization: {slot.headers['Authorization']}\r\n\r\n"
    ).encode()
    conn = h.connect()
    conn.write(head + b"x" * 50_000)
    assert len(h.storage.pending) == 1
    conn.close()
    assert h.storage.pending == set() and h.storage.files == {}
    assert len(h.storage.partials[slot.slot.file_id]) == 50_000
    assert h.request("GET", slot.url).code == 404
    data = b"y" * 100_000
    assert h.request("PUT", slot.url, data=data, headers=slot.headers).code == 201
    assert h.request("GET", slot.url).body == data
    assert h.storage.partials == {}


def test_chunked_put_needs_a_length(h: Harness) -> None:
    """A PUT without Content-Length (chunked) is refused with 411."""
    slot = h.mint(size=5)
    conn = h.send(
        f"PUT {slot.path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Connection: close\r\nAuthorization: {slot.headers['Authorization']}\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n".encode()
    )
    assert conn.received.startswith(b"HTTP/1.1 411 ")


def test_not_found(h: Harness) -> None:
    """Unknown ids, wrong names and paths that try to escape all give 404."""
    slot = h.mint(size=5)
    h.request("PUT", slot.url, data=b"hello", headers=slot.headers)
    file_id = slot.slot.file_id
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
        response = h.request("GET", h.base + path)
        assert response.code == 404, path
        assert_common_headers(response)


def test_options_and_other_methods(h: Harness) -> None:
    """OPTIONS answers the CORS preflight; other methods get 405 with CORS."""
    slot = h.mint()
    response = h.request(
        "OPTIONS",
        slot.url,
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.code in (200, 204)
    assert_common_headers(response)
    for method in ("POST", "DELETE"):
        response = h.request(method, slot.url)
        assert response.code == 405
        assert "GET" in (header(response, "Allow") or "")
        assert_common_headers(response)
    # A PATCH appends to an upload (#12): it needs the slot's token.
    response = h.request("PATCH", slot.url)
    assert response.code == 403
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

        def getClientAddress(self):
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


def test_full_disk_answers_507_and_keeps_serving() -> None:
    """A full disk mid-upload: 507, the partial file removed, the next upload works."""
    storage = MemoryStorage(room=1000)
    h = make_harness(storage=storage)
    slot = h.mint(size=50_000, content_type=None)
    response = h.request("PUT", slot.url, data=b"z" * 50_000, headers=slot.headers)
    assert response.code == 507
    assert b"storage" in response.body.lower()
    assert_common_headers(response)
    assert storage.pending == set() and storage.files == {}
    assert h.request("GET", slot.url).code == 404

    storage.room = None
    response = h.request("PUT", slot.url, data=b"z" * 50_000, headers=slot.headers)
    assert response.code == 201


def test_post_with_hostile_content_type(h: Harness) -> None:
    """A POST whose Content-Type holds a line separator gets 405, not a crash."""
    conn = h.send(
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data\x0b; boundary=a\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    assert conn.received.startswith(b"HTTP/1.1 405 ")


@pytest.mark.parametrize(
    ("trusted", "expected"), [([], None), (["127.0.0.1"], "max-age=31536000")]
)
def test_hsts_from_a_trusted_proxy_only(
    trusted: list[str], expected: str | None
) -> None:
    """X-Forwarded-Proto: https gives HSTS only when the peer is a trusted proxy."""
    h = make_harness(http={"trusted_proxies": trusted})
    # Plain HTTP from the proxy (an https:// URL would be TLS in the harness).
    response = h.request(
        "GET", "http://upload.example/nothing", headers={"X-Forwarded-Proto": "https"}
    )
    assert header(response, "Strict-Transport-Security") == expected


@pytest.mark.parametrize(
    ("trusted", "shown"), [([], "127.0.0.1 - -"), (["127.0.0.1"], "203.0.113.9 - -")]
)
def test_access_log_names_the_client_behind_a_trusted_proxy(
    trusted: list[str], shown: str
) -> None:
    """The access log shows X-Forwarded-For's client only from a trusted proxy."""
    h = make_harness(http={"trusted_proxies": trusted})
    h.start()
    with capturedLogs() as events:
        h.request("GET", h.base + "x", headers={"X-Forwarded-For": "203.0.113.9"})
    h.stop()
    lines = [formatEvent(e) or "" for e in events]
    assert any(line.startswith(shown) for line in lines), lines
