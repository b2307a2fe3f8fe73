"""Range requests (RFC 9110 §14): one byte range, or the whole file.

Several ranges are answered with the whole file (200), which RFC 9110
allows; it keeps responses simple and no upload client asks for more than one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"(\d*)-(\d*)")


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
        start = int(first)
        if last and int(last) < start:
            return None  # invalid spec: ignore the header
        if start >= size:
            raise Unsatisfiable
        end = min(int(last), size - 1) if last else size - 1
        return ByteRange(start, end)
    if not last:
        return None  # "bytes=-" is not a range
    suffix = int(last)
    if suffix == 0:
        raise Unsatisfiable
    return ByteRange(max(0, size - suffix), size - 1)
