"""Downloads every client is happy with: ranges, validators, 304, disposition."""

from __future__ import annotations

from email.utils import formatdate
from urllib.parse import unquote

import pytest
from helpers import assert_common_headers, header
from hypothesis import given
from hypothesis import strategies as st

from httpupload.testing import Harness, make_harness
from httpupload.web.disposition import content_disposition, is_inline
from httpupload.web.ranges import ByteRange, Unsatisfiable, parse_range

DATA = bytes(range(256)) * 40  # 10240 bytes


# -- pure parsers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"bytes=0-0", ByteRange(0, 0)),
        (b"bytes=0-99", ByteRange(0, 99)),
        (b"bytes=100-", ByteRange(100, 10239)),
        (b"bytes=-100", ByteRange(10140, 10239)),
        (b"bytes=-99999", ByteRange(0, 10239)),
        (b"bytes=10000-99999", ByteRange(10000, 10239)),
        (b"Bytes = 5-6", ByteRange(5, 6)),
        (None, None),
        (b"items=0-5", None),
        (b"bytes=5-4", None),
        (b"bytes=0-1,5-6", None),
        (b"bytes=a-b", None),
        (b"bytes=-", None),
        (b"bytes", None),
    ],
)
def test_parse_range(value: bytes | None, expected: ByteRange | None) -> None:
    """Single byte ranges are honoured; anything else means the whole file."""
    assert parse_range(value, 10240) == expected


@pytest.mark.parametrize("value", [b"bytes=10240-", b"bytes=99999-100000", b"bytes=-0"])
def test_unsatisfiable(value: bytes) -> None:
    """Ranges entirely past the end (or an empty suffix) are unsatisfiable."""
    with pytest.raises(Unsatisfiable):
        parse_range(value, 10240)


@given(st.integers(1, 10**12), st.binary(max_size=40))
def test_parse_range_any_bytes(size: int, value: bytes) -> None:
    """Any header value gives a range inside the file, None, or Unsatisfiable."""
    try:
        wanted = parse_range(value, size)
    except Unsatisfiable:
        return
    if wanted is not None:
        assert 0 <= wanted.start <= wanted.end < size


@given(st.integers(1, 10**9), st.integers(0, 10**9), st.integers(0, 10**9))
def test_parse_range_model(size: int, first: int, last: int) -> None:
    """bytes=N-M follows RFC 9110: clipped at the end, refused past it."""
    value = f"bytes={first}-{last}".encode()
    if last < first:
        assert parse_range(value, size) is None
    elif first >= size:
        with pytest.raises(Unsatisfiable):
            parse_range(value, size)
    else:
        assert parse_range(value, size) == ByteRange(first, min(last, size - 1))


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("image/jpeg", True),
        ("IMAGE/PNG; x=y", True),
        ("audio/ogg", True),
        ("video/mp4", True),
        ("image/svg+xml", False),
        ("text/html", False),
        ("application/pdf", False),
        ("application/octet-stream", False),
        ("text/plain", False),
    ],
)
def test_inline_types(content_type: str, inline: bool) -> None:
    """Media is shown inline; SVG, HTML and everything else is an attachment."""
    assert is_inline(content_type) is inline


@given(st.text(min_size=1, max_size=100), st.booleans())
def test_content_disposition_round_trip(filename: str, inline: bool) -> None:
    """The header is plain ASCII and filename* gives back the exact name."""
    value = content_disposition(filename, inline).decode("ascii")
    assert "\r" not in value and "\n" not in value
    assert value.startswith("inline;" if inline else "attachment;")
    encoded = value.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded, errors="strict") == filename
    fallback = value.split('filename="', 1)[1].split('";', 1)[0]
    assert '"' not in fallback and "\\" not in fallback


# -- over the wire (in memory) ----------------------------------------------------


@pytest.fixture
def h() -> Harness:
    """Our UploadSite with default limits, on memory storage and a clock."""
    return make_harness()


def test_range_requests(h: Harness) -> None:
    """206 with Content-Range for one range, 200 for several, 416 past the end."""
    url = h.upload(DATA)
    response = h.request("GET", url, headers={"Range": "bytes=10-19"})
    assert response.code == 206
    assert response.body == DATA[10:20]
    assert header(response, "Content-Range") == "bytes 10-19/10240"
    assert_common_headers(response)

    response = h.request("GET", url, headers={"Range": "bytes=-5"})
    assert (response.code, response.body) == (206, DATA[-5:])

    response = h.request("GET", url, headers={"Range": "bytes=10000-"})
    assert (response.code, response.body) == (206, DATA[10000:])

    response = h.request("GET", url, headers={"Range": "bytes=0-1,5-6"})
    assert (response.code, response.body) == (200, DATA)

    response = h.request("GET", url, headers={"Range": "bytes=20000-"})
    assert response.code == 416
    assert header(response, "Content-Range") == "bytes */10240"
    assert_common_headers(response)


def test_head_equals_get_without_body(h: Harness) -> None:
    """HEAD carries exactly GET's headers, Content-Length included, and no body."""
    url = h.upload(DATA, name="photo.jpg")
    get = h.request("GET", url)
    head = h.request("HEAD", url)
    assert head.body == b""
    for name in (
        "Content-Type",
        "ETag",
        "Last-Modified",
        "Repr-Digest",
        "Content-Disposition",
        "Accept-Ranges",
    ):
        assert header(head, name) == header(get, name), name
    path = url[len(h.base) - 1 :]
    raw = h.send(
        f"HEAD {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    assert raw.received.startswith(b"HTTP/1.1 206 ")
    assert b"\r\nContent-Length: 10\r\n" in raw.received
    assert raw.received.endswith(b"\r\n\r\n")
    assert raw.closed


def test_conditional_requests(h: Harness) -> None:
    """A strong ETag from the digest; If-None-Match and If-Modified-Since give 304."""
    url = h.upload(DATA)
    response = h.request("GET", url)
    etag = header(response, "ETag")
    assert etag is not None and etag.startswith('"') and len(etag) == 66
    modified = header(response, "Last-Modified")
    assert modified is not None

    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
        {"If-Modified-Since": formatdate(2_000_000_000, usegmt=True)},
    ):
        response = h.request("GET", url, headers=headers)
        assert response.code == 304, headers
        assert response.body == b""
        assert header(response, "ETag") == etag
        assert_common_headers(response)

    for headers in (
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": formatdate(1_000_000_000, usegmt=True)},
        {"If-Modified-Since": "not a date"},
        # If-None-Match wins over If-Modified-Since.
        {"If-None-Match": '"other"', "If-Modified-Since": modified},
    ):
        response = h.request("GET", url, headers=headers)
        assert (response.code, response.body) == (200, DATA), headers


def test_if_range(h: Harness) -> None:
    """If-Range: the range if the validator matches, else the whole file."""
    url = h.upload(DATA)
    response = h.request("GET", url)
    etag, modified = header(response, "ETag"), header(response, "Last-Modified")
    for validator, partial in (
        (etag, True),
        (modified, True),
        ('"stale"', False),
        (f"W/{etag}", False),
        (formatdate(1_000_000_000, usegmt=True), False),
    ):
        assert validator is not None
        response = h.request(
            "GET", url, headers={"Range": "bytes=0-3", "If-Range": validator}
        )
        if partial:
            assert (response.code, response.body) == (206, DATA[:4]), validator
        else:
            assert (response.code, response.body) == (200, DATA), validator


def test_content_disposition_over_the_wire(h: Harness) -> None:
    """Images inline, HTML as an attachment named as uploaded (RFC 8187)."""
    image = h.upload(b"\x89PNG", name="pic.png")
    slot = h.mint("évil page.html", 6, "text/html")
    response = h.request("PUT", slot.url, data=b"<html>", headers=slot.headers)
    assert response.code == 201
    response = h.request("GET", slot.url)
    assert header(response, "Content-Type") == "text/html"
    disposition = header(response, "Content-Disposition") or ""
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%C3%A9vil%20page.html" in disposition
    slot = h.mint("cat.png", 4, "image/png")
    h.request("PUT", slot.url, data=b"\x89PNG", headers=slot.headers)
    response = h.request("GET", slot.url)
    assert (header(response, "Content-Disposition") or "").startswith("inline;")
    response = h.request("GET", image)
    assert header(response, "Content-Type") == "application/octet-stream"
    assert (header(response, "Content-Disposition") or "").startswith("attachment;")
