"""Range requests (RFC 9110 §14): one byte range, or the whole file.

Several ranges are answered with the whole file (200), which RFC 9110
allows; it keeps responses simple and no upload client asks for more than one.

Numbers of any length are read as RFC 9110 says, without converting more
than ``MAX_DIGITS`` digits (Python refuses to convert more than 4,300): a
number longer than that is larger than any file.  So ``bytes=<huge>-`` starts
past the end (416), ``bytes=0-<huge>`` runs to the last byte (206), and
``bytes=-<huge>`` is the whole file (206); a last position below the first
makes the range invalid, and the header is ignored (200).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from httpupload.web.wire import MAX_DIGITS

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


class Unsatisfiable(Exception):
    """No part of the requested range lies inside the file: 416."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> bytes:
        return f"bytes {self.start}-{self.end}/{size}".encode("ascii")


def _number(digits: str) -> int | None:
    """The value of a digit string, None if it is larger than any file."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_DIGITS else None


def _below(a: str, b: str) -> bool:
    """Whether digit string ``a`` is a smaller number than ``b`` (any length)."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def parse_range(header: bytes | None, size: int) -> ByteRange | None:
    """The range to serve, None for the whole file; raises Unsatisfiable.

    A header that is absent, not in bytes, malformed or asks for several
    ranges is ignored (the whole file is served), as RFC 9110 allows.
    """
    if header is None or size <= 0:
        return None
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return None
    unit, sep, specs = text.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p.strip() for p in specs.split(",") if p.strip()]
    if len(parts) != 1:
        return None
    match = _SPEC.fullmatch(parts[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        if last and _below(last, first):
            return None  # invalid spec: ignore the header
        start = _number(first)
        if start is None or start >= size:
            raise Unsatisfiable
        end = _number(last) if last else None
        return ByteRange(start, size - 1 if end is None else min(end, size - 1))
    if not last:
        return None  # "bytes=-" is not a range
    suffix = _number(last)
    if suffix == 0:
        raise Unsatisfiable
    return ByteRange(0 if suffix is None else max(0, size - suffix), size - 1)
