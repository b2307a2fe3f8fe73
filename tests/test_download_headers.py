"""What a download writes into its headers: always sendable, never cached too long.

Cache-Control never lets a cache keep a file past its expiry (XEP-0363's
``expire-before``); stored values that cannot be header values (a type with
non-ASCII text, a damaged digest or time) fall back to safe ones; anything
unforeseen ends in a 500 or a cut connection, never an unanswered request.
The conditional-request parsers answer a bool for any bytes at all.
"""

from __future__ import annotations

import math
from typing import Any, cast
from urllib.parse import unquote

import pytest
from helpers import assert_common_headers, header
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.web.http_headers import Headers

from httpupload.metadata import FileRecord, MetadataStore
from httpupload.slots import url_path
from httpupload.storage import FileInfo, StoredFile
from httpupload.storage.memory import MemoryFile, MemoryStorage
from httpupload.testing import (
    START,
    Answer,
    Harness,
    make_harness,
    result_of,
    stored_file,
)
from httpupload.web import resource, upload_answers
from httpupload.web.conditional import (
    etag,
    last_modified,
    not_modified,
    range_applies,
)
from httpupload.web.disposition import content_disposition
from httpupload.web.resource import YEAR, cache_control

DATA = b"0123456789" * 100


class Records:
    """The one call downloads make of a metadata store: ``get``."""

    def __init__(self) -> None:
        self.records: dict[str, FileRecord] = {}

    def add(self, info: FileInfo, expires: float | None) -> None:
        self.records[info.file_id] = FileRecord.orphan(info, expires)

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        return succeed(self.records.get(file_id))


@pytest.fixture
def site() -> tuple[Harness, Records]:
    """A site with records, on a clock."""
    records = Records()
    return make_harness(metadata=cast(MetadataStore, records)), records


@pytest.fixture
def bare() -> Harness:
    """A site without a metadata store (as some embeddings run it)."""
    return make_harness()


def store_file(h: Harness, data: bytes, **kw: Any) -> tuple[FileInfo, str]:
    """Store ``data`` straight into storage (any info at all); its info, GET path."""
    info = result_of(stored_file(h.storage, None, data, **kw))
    return info, "/" + url_path(info.file_id, info.filename)


def get(h: Harness, path: str, **kwargs: Any) -> Answer:
    """A request that must be answered (a hang fails: nothing comes back)."""
    return h.request(kwargs.pop("method", "GET"), path, **kwargs)


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


def test_an_expiring_file_is_cached_no_longer_than_it_is_served(
    site: tuple[Harness, Records],
) -> None:
    """Sixty seconds left: max-age=60, then less; 304 and 416 say the same; then 404."""
    server, records = site
    info, path = store_file(server, DATA)
    records.add(info, expires=START + 60)
    response = get(server, path)
    body = response.body
    assert (response.code, body) == (200, DATA)
    expected = "public, max-age=60, immutable, must-revalidate"
    assert header(response, "Cache-Control") == expected
    server.clock.advance(30.5)
    expected = "public, max-age=29, immutable, must-revalidate"
    response = get(server, path)
    assert header(response, "Cache-Control") == expected
    response = get(server, path, headers={"If-None-Match": header(response, "ETag")})
    assert response.code == 304
    assert header(response, "Cache-Control") == expected
    response = get(server, path, headers={"Range": "bytes=5000-"})
    assert response.code == 416
    assert header(response, "Cache-Control") == expected
    server.clock.advance(30)
    response = get(server, path)
    assert response.code == 404


def test_a_file_kept_for_ever_or_for_years_is_cached_a_year(
    site: tuple[Harness, Records],
) -> None:
    """No expiry: a year and immutable; an expiry years away: a year at most."""
    server, records = site
    forever, forever_path = store_file(server, DATA)
    records.add(forever, expires=None)
    later, later_path = store_file(server, DATA)
    records.add(later, expires=START + 3 * YEAR)
    response = get(server, forever_path)
    assert header(response, "Cache-Control") == "public, max-age=31536000, immutable"
    response = get(server, later_path)
    assert header(response, "Cache-Control") == (
        "public, max-age=31536000, immutable, must-revalidate"
    )


def test_without_records_caches_must_ask_each_time(bare: Harness) -> None:
    """No metadata store, no known expiry: caches keep the file but revalidate."""
    _, path = store_file(bare, DATA)
    response = get(bare, path)
    body = response.body
    assert (response.code, body) == (200, DATA)
    assert header(response, "Cache-Control") == "public, no-cache"
    response = get(bare, path, headers={"If-None-Match": "*"})
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
def test_a_stored_type_that_cannot_be_a_header_is_served_safely(
    bare: Harness, content_type: str
) -> None:
    """The file is served (GET and HEAD) as application/octet-stream, an attachment."""
    _, path = store_file(bare, DATA, name="a.png", content_type=content_type)
    for method in ("GET", "HEAD"):
        response = get(bare, path, method=method)
        body = response.body
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
def test_a_damaged_validator_is_left_out(bare: Harness, damage: dict[str, Any]) -> None:
    """A digest or time that is none is not sent; conditions then never match."""
    _, path = store_file(bare, DATA, **damage)
    response = get(bare, path)
    body = response.body
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
        response = get(bare, path, headers=conditions)
        body = response.body
        assert (response.code, body) == (200, DATA), conditions


def test_an_error_before_the_response_starts_is_a_500(
    bare: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything unforeseen while setting headers answers 500 with the usual headers."""
    _, path = store_file(bare, DATA, name="a.png", content_type="image/png")

    def broken(content_type: str) -> bool:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(resource, "is_inline", broken)
    response = get(bare, path)
    body = response.body
    assert response.code == 500
    assert body == b"Internal server error\n"
    assert header(response, "Content-Type") == "text/plain; charset=utf-8"
    assert header(response, "Content-Disposition") is None
    assert header(response, "ETag") is None
    assert_common_headers(response)
    # The site goes on serving.
    monkeypatch.undo()
    response = get(bare, path)
    body = response.body
    assert (response.code, body) == (200, DATA)


class BrokenFile(MemoryFile):
    """A stored file that fails once its response has started."""

    def send(self, request: Any, offset: int, length: int) -> None:
        request.write(DATA[:10])
        raise RuntimeError("unforeseen")


class BrokenStorage(MemoryStorage):
    """Memory storage whose files fail midway through being sent."""

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        info, data = self.files[file_id]
        return succeed(BrokenFile(info, data, self.chunk_size))


def test_an_error_after_the_response_started_cuts_the_connection() -> None:
    """Once the head is out a 500 is impossible: the client sees a cut, not a hang."""
    h = make_harness(storage=BrokenStorage())
    _, path = store_file(h, DATA)
    conn = h.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert conn.closed
    assert DATA not in conn.received  # never ended as if whole


def test_an_error_after_an_upload_is_stored_is_a_500(
    bare: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PUT's answer is sent even if building it fails."""

    def broken(sha256: str) -> bytes:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(upload_answers, "repr_digest", broken)
    slot = bare.mint("a.txt", 5, "text/plain")
    response = bare.request("PUT", slot.url, data=b"hello", headers=slot.headers)
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
