"""Validators and conditional requests: ETag, Last-Modified, 304, If-Range."""

from __future__ import annotations

from email.utils import formatdate, parsedate_to_datetime

from twisted.web.http_headers import Headers

from httpupload.storage import FileInfo


def etag(info: FileInfo) -> bytes:
    """A strong validator: stored files never change, their digest names them."""
    return b'"' + info.sha256.encode("ascii") + b'"'


def last_modified(info: FileInfo) -> bytes:
    return formatdate(int(info.created), usegmt=True).encode("ascii")


def _http_date(value: bytes) -> int | None:
    try:
        return int(parsedate_to_datetime(value.decode("latin-1")).timestamp())
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def _tags(value: bytes) -> list[bytes]:
    return [t.strip().removeprefix(b"W/") for t in value.split(b",") if t.strip()]


def not_modified(headers: Headers, info: FileInfo) -> bool:
    """Whether a GET or HEAD should get 304 (RFC 9110 §13.2.2 order)."""
    none_match = headers.getRawHeaders(b"If-None-Match")
    if none_match:
        tags = [t for value in none_match for t in _tags(value)]
        return b"*" in tags or etag(info) in tags
    since = headers.getRawHeaders(b"If-Modified-Since")
    if since:
        when = _http_date(since[0])
        return when is not None and int(info.created) <= when
    return False


def range_applies(headers: Headers, info: FileInfo) -> bool:
    """False when an If-Range validator no longer matches: send the whole file."""
    values = headers.getRawHeaders(b"If-Range")
    if not values:
        return True
    value = values[0].strip()
    if value.startswith((b'"', b"W/")):
        return value == etag(info)  # strong comparison; weak tags never match
    when = _http_date(value)
    return when is not None and when == int(info.created)
