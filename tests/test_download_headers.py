"""What a download writes into its headers: always sendable, never cached too long.

Cache-Control never lets a cache keep a file past its expiry (XEP-0363's
``expire-before``); stored values that cannot be header values (a type with
non-ASCII text, a damaged digest or time) fall back to safe ones; anything
unforeseen ends in a 500 or a cut connection, never an unanswered request.
The conditional-request parsers answer a bool for any bytes at all.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import pytest_twisted
from clocked_server import START, start_clocked_server, store_file
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.web.http_headers import Headers
from webserver import Server, assert_common_headers, header

from httpupload.metadata import FileRecord
from httpupload.storage import FileInfo
from httpupload.storage.filesystem import FilesystemFile
from httpupload.web import resource
from httpupload.web.conditional import (
    etag,
    last_modified,
    not_modified,
    range_applies,
)
from httpupload.web.disposition import content_disposition
from httpupload.web.resource import YEAR, cache_control

DATA = b"0123456789" * 100
# No answer within this is the bug: a request left hanging.
ANSWER_WITHIN = 5


class Records:
    """The one call downloads make of a metadata store: ``get``."""

    def __init__(self) -> None:
        self.records: dict[str, FileRecord] = {}

    def add(self, info: FileInfo, expires: float | None) -> None:
        self.records[info.file_id] = FileRecord.orphan(info, expires)

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        return succeed(self.records.get(file_id))


@pytest_twisted.async_yield_fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Server, Records]]:
    """A site with records, on a Clock."""
    records = Records()
    server = await start_clocked_server(tmp_path, metadata=records)
    yield server, records
    await server.listening.stopListening()


@pytest_twisted.async_yield_fixture
async def bare(tmp_path: Path) -> AsyncIterator[Server]:
    """A site without a metadata store (as some embeddings run it)."""
    server = await start_clocked_server(tmp_path)
    yield server
    await server.listening.stopListening()


async def get(server: Server, path: str, **kwargs: Any) -> tuple[Any, bytes]:
    url = server.base + path.lstrip("/")
    return await server.request(
        kwargs.pop("method", "GET"), url, timeout=ANSWER_WITHIN, **kwargs
    )


# -- Cache-Control --------------------------------------------------------------


@given(
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.floats(0, 4e9),
)
def test_max_age_never_exceeds_the_time_left(expires: float | None, now: float) -> None:
    """max-age is at most the whole seconds left to expiry, and at most a year."""
    value = cache_control(expires, now).decode("ascii")
    max_age = int(value.split("max-age=", 1)[1].split(",", 1)[0])
    assert 0 <= max_age <= YEAR
    if expires is None:
        assert value == "public, max-age=31536000, immutable"
        return
    assert "must-revalidate" in value
    if math.isnan(expires):
        assert max_age == 0
    else:
        assert max_age <= max(0.0, expires - now)


@pytest_twisted.ensureDeferred
async def test_an_expiring_file_is_cached_no_longer_than_it_is_served(
    site: tuple[Server, Records],
) -> None:
    """Sixty seconds left: max-age=60, then less; 304 and 416 say the same; then 404."""
    server, records = site
    info, path = await store_file(server, DATA)
    records.add(info, expires=START + 60)
    response, body = await get(server, path)
    assert (response.code, body) == (200, DATA)
    expected = "public, max-age=60, immutable, must-revalidate"
    assert header(response, "Cache-Control") == expected
    server.clock.advance(30.5)
    expected = "public, max-age=29, immutable, must-revalidate"
    response, _ = await get(server, path)
    assert header(response, "Cache-Control") == expected
    response, _ = await get(
        server, path, headers={"If-None-Match": header(response, "ETag")}
    )
    assert response.code == 304
    assert header(response, "Cache-Control") == expected
    response, _ = await get(server, path, headers={"Range": "bytes=5000-"})
    assert response.code == 416
    assert header(response, "Cache-Control") == expected
    server.clock.advance(30)
    response, _ = await get(server, path)
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_a_file_kept_for_ever_or_for_years_is_cached_a_year(
    site: tuple[Server, Records],
) -> None:
    """No expiry: a year and immutable; an expiry years away: a year at most."""
    server, records = site
    forever, forever_path = await store_file(server, DATA)
    records.add(forever, expires=None)
    later, later_path = await store_file(server, DATA)
    records.add(later, expires=START + 3 * YEAR)
    response, _ = await get(server, forever_path)
    assert header(response, "Cache-Control") == "public, max-age=31536000, immutable"
    response, _ = await get(server, later_path)
    assert header(response, "Cache-Control") == (
        "public, max-age=31536000, immutable, must-revalidate"
    )


@pytest_twisted.ensureDeferred
async def test_without_records_caches_must_ask_each_time(bare: Server) -> None:
    """No metadata store, no known expiry: caches keep the file but revalidate."""
    _, path = await store_file(bare, DATA)
    response, body = await get(bare, path)
    assert (response.code, body) == (200, DATA)
    assert header(response, "Cache-Control") == "public, no-cache"
    response, _ = await get(bare, path, headers={"If-None-Match": "*"})
    assert response.code == 304
    assert header(response, "Cache-Control") == "public, no-cache"


# -- stored values that cannot be header values -------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        'text/plain; name="€"',
        'text/plain; name="\u202e"',
        "image/png\r\nX-Injected: 1",
        "image/png\x00",
        "image/png\x7f",
        "",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_stored_type_that_cannot_be_a_header_is_served_safely(
    bare: Server, content_type: str
) -> None:
    """The file is served (GET and HEAD) as application/octet-stream, an attachment."""
    _, path = await store_file(bare, DATA, name="a.png", content_type=content_type)
    for method in ("GET", "HEAD"):
        response, body = await get(bare, path, method=method)
        assert response.code == 200
        assert body == (DATA if method == "GET" else b"")
        assert header(response, "Content-Type") == "application/octet-stream"
        assert header(response, "Content-Disposition").startswith("attachment;")
        assert not response.headers.hasHeader("X-Injected")
        assert_common_headers(response)


@pytest.mark.parametrize(
    "damage",
    [
        {"sha256": "not a digest"},
        {"sha256": ""},
        {"sha256": "é" * 64},
        {"created": math.nan},
        {"created": math.inf},
        {"created": 1e300},
        {"created": -1e300},
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_damaged_validator_is_left_out(
    bare: Server, damage: dict[str, Any]
) -> None:
    """A digest or time that is none is not sent; conditions then never match."""
    _, path = await store_file(bare, DATA, **damage)
    response, body = await get(bare, path)
    assert (response.code, body) == (200, DATA)
    if "sha256" in damage:
        assert header(response, "ETag") is None
        assert header(response, "Repr-Digest") is None
        assert header(response, "Last-Modified") is not None
    else:
        assert header(response, "Last-Modified") is None
        assert header(response, "ETag") is not None
    for conditions in (
        {"If-None-Match": '"not a digest"'},
        {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"Range": "bytes=0-3", "If-Range": '"not a digest"'},
        {"Range": "bytes=0-3", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"},
    ):
        response, body = await get(bare, path, headers=conditions)
        assert (response.code, body) == (200, DATA), conditions


@pytest_twisted.ensureDeferred
async def test_an_error_before_the_response_starts_is_a_500(
    bare: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything unforeseen while setting headers answers 500 with the usual headers."""
    _, path = await store_file(bare, DATA, name="a.png", content_type="image/png")

    def broken(content_type: str) -> bool:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(resource, "is_inline", broken)
    response, body = await get(bare, path)
    assert response.code == 500
    assert body == b"Internal server error\n"
    assert header(response, "Content-Type") == "text/plain; charset=utf-8"
    assert header(response, "Content-Disposition") is None
    assert header(response, "ETag") is None
    assert_common_headers(response)
    # The site goes on serving.
    monkeypatch.undo()
    response, body = await get(bare, path)
    assert (response.code, body) == (200, DATA)


@pytest_twisted.ensureDeferred
async def test_an_error_after_the_response_started_cuts_the_connection(
    bare: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the head is out a 500 is impossible: the client sees a cut, not a hang."""
    _, path = await store_file(bare, DATA)

    def broken(self: Any, request: Any, offset: int, length: int) -> None:
        request.write(DATA[:10])
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(FilesystemFile, "send", broken)
    got, ending = await deferToThread(_exchange, bare.port, path)
    assert ending in ("closed", "reset")
    assert DATA not in got  # never ended as if whole


def _exchange(port: int, path: str) -> tuple[bytes, str]:
    """A raw GET: what came back, and how it ended (closed, reset, or silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionResetError:
            return got, "reset"
        except TimeoutError:
            return got, "silence"
        return got, "closed"


@pytest_twisted.ensureDeferred
async def test_an_error_after_an_upload_is_stored_is_a_500(
    bare: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PUT's answer is sent even if building it fails."""

    def broken(sha256: str) -> bytes:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(resource, "repr_digest", broken)
    _, url, headers = bare.mint("a.txt", 5, "text/plain")
    response, _ = await bare.request(
        "PUT", url, data=b"hello", headers=headers, timeout=ANSWER_WITHIN
    )
    assert response.code == 500


# -- the pure parts, over anything ------------------------------------------------

# Every code point, lone surrogates included (a damaged record can hold them).
code_points = st.one_of(
    st.integers(0, 0x7F), st.integers(0xD800, 0xDFFF), st.integers(0, 0x10FFFF)
)
any_text = st.lists(code_points, max_size=80).map(
    lambda points: "".join(map(chr, points))
)


@given(any_text, st.booleans())
def test_content_disposition_is_always_sendable(filename: str, inline: bool) -> None:
    """Any name at all gives printable ASCII; a valid name comes back exactly."""
    value = content_disposition(filename, inline).decode("ascii")
    assert value.isprintable()
    assert value.startswith("inline;" if inline else "attachment;")
    encoded = value.split("filename*=UTF-8''", 1)[1]
    if not any("\ud800" <= c <= "\udfff" for c in filename):
        assert unquote(encoded, errors="strict") == filename


infos = st.builds(
    FileInfo,
    file_id=st.just("x"),
    filename=st.just("a"),
    size=st.just(10),
    content_type=st.just("text/plain"),
    sha256=st.one_of(st.just("a" * 64), any_text),
    created=st.one_of(st.floats(), st.integers(-(10**20), 10**20)),
)
header_values = st.one_of(
    st.binary(max_size=100),
    st.sampled_from(
        [
            b"*",
            b'"' + b"a" * 64 + b'"',
            b'W/"' + b"a" * 64 + b'"',
            b"Thu, 01 Jan 1970 00:00:00 GMT",
            b"Fri, 31 Dec 9999 23:59:59 GMT",
            b"Mon, 01 Jan 0001 00:00:00 -0000",
            b"Mon, 01 Jan 2024 00:00:00 +9999",
            b"Mon, 01 Jan " + b"9" * 5000 + b" 00:00:00 GMT",
        ]
    ),
)


@given(
    infos,
    st.dictionaries(
        st.sampled_from([b"If-None-Match", b"If-Modified-Since", b"If-Range"]),
        st.lists(header_values, min_size=1, max_size=3),
    ),
)
def test_conditional_parsers_answer_a_bool_for_any_bytes(
    info: FileInfo, raw: dict[bytes, list[bytes]]
) -> None:
    """If-None-Match, If-Modified-Since, If-Range: a bool, never an exception."""
    headers = Headers()
    for name, values in raw.items():
        headers.setRawHeaders(name, values)
    assert not_modified(headers, info) in (True, False)
    assert range_applies(headers, info) in (True, False)
    tag, modified = etag(info), last_modified(info)
    assert tag is None or tag.isascii()
    assert modified is None or modified.isascii()


def test_an_overlong_date_is_no_date() -> None:
    """A date of thousands of digits is ignored at once (the file is sent whole)."""
    info = FileInfo("x", "a", 10, "text/plain", "a" * 64, START)
    headers = Headers({b"If-Modified-Since": [b"Mon, 01 Jan " + b"9" * 5000 + b" GMT"]})
    assert not_modified(headers, info) is False
    headers = Headers({b"If-Range": [b"1" * 10000]})
    assert range_applies(headers, info) is False
