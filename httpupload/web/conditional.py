"""Validators and conditional requests: ETag, Last-Modified, 304, If-Range.

The validators come from what storage kept with the file; one that is not
fit to be a header (no digest, as for a direct-mode object, or a time that
is no date) is left out, never a reason to fail the response.  The request
headers are client bytes: every parser here answers for any value.
"""

from __future__ import annotations

import math
import re
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime

from twisted.web.http_headers import Headers

from httpupload.storage import FileInfo

_DIGEST = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
# The longest HTTP-date is 29 characters; anything much longer is no date.
MAX_DATE_LENGTH = 64
# Year 1 to year 9999: what HTTP-dates (and Python's datetime) can name.
_FIRST_SECOND, _LAST_SECOND = -62135596800, 253402300799


def has_digest(info: FileInfo) -> bool:
    """Whether the stored SHA-256 is one (direct-mode objects have none)."""
    return _DIGEST.fullmatch(info.sha256) is not None


def etag(info: FileInfo) -> bytes | None:
    """A strong validator: stored files never change, their digest names them."""
    if not has_digest(info):
        return None
    return b'"' + info.sha256.encode("ascii") + b'"'


def modified_second(info: FileInfo) -> int | None:
    """The file's creation time in whole seconds, if it is a date at all."""
    created = info.created
    if not isinstance(created, int | float) or not math.isfinite(created):
        return None
    second = int(created)
    if not 0 <= second <= _LAST_SECOND:
        return None
    return second


def last_modified(info: FileInfo) -> bytes | None:
    second = modified_second(info)
    if second is None:
        return None
    return formatdate(second, usegmt=True).encode("ascii")


def _http_date(value: bytes) -> int | None:
    """An HTTP-date as a POSIX second; None for anything else (then ignored)."""
    value = value.strip()
    if not value or len(value) > MAX_DATE_LENGTH:
        return None
    try:
        when = parsedate_to_datetime(value.decode("latin-1"))
        if when.tzinfo is None:
            # HTTP-dates are GMT (RFC 9110 §5.6.7), never local time.
            when = when.replace(tzinfo=UTC)
        second = int(when.timestamp())
    except (ValueError, TypeError, IndexError, OverflowError, OSError):
        return None
    return second if _FIRST_SECOND <= second <= _LAST_SECOND else None


def _tags(value: bytes) -> list[bytes]:
    return [t.strip().removeprefix(b"W/") for t in value.split(b",") if t.strip()]


def not_modified(headers: Headers, info: FileInfo) -> bool:
    """Whether a GET or HEAD should get 304 (RFC 9110 §13.2.2 order)."""
    none_match = headers.getRawHeaders(b"If-None-Match")
    if none_match:
        tags = {t for value in none_match for t in _tags(value)}
        tag = etag(info)
        return b"*" in tags or (tag is not None and tag in tags)
    since = headers.getRawHeaders(b"If-Modified-Since")
    if since:
        when = _http_date(since[0])
        modified = modified_second(info)
        return when is not None and modified is not None and modified <= when
    return False


def range_applies(headers: Headers, info: FileInfo) -> bool:
    """False when an If-Range validator no longer matches: send the whole file."""
    values = headers.getRawHeaders(b"If-Range")
    if not values:
        return True
    value = values[0].strip()
    if value.startswith((b'"', b"W/")):
        # Strong comparison; weak tags never match.
        tag = etag(info)
        return tag is not None and value == tag
    when = _http_date(value)
    return when is not None and when == modified_second(info)
