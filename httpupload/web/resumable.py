"""The resumable-upload protocols a slot URL speaks, as header values in and out.

Pure functions, no I/O: what the IETF draft "Resumable Uploads for HTTP"
says at each interop version clients send (3, 5, 6 and 8), what tus 1.0
says, and what a plain client asking "did my upload land?" gets.  A request
is answered in the dialect it names: ``Upload-Draft-Interop-Version`` for
the draft (an unknown version is a plain request, as the draft asks),
``Tus-Resumable`` for tus, neither for plain HTTP.

What changes between the versions (docs/resumable.md has the table):

- completeness is ``Upload-Incomplete`` (inverted) in 3, ``Upload-Complete``
  from 5 on;
- ``Upload-Length`` exists in 6 and 8 only; ``Upload-Limit`` from 5 on, its
  idle limit called ``expires`` in 5 and ``max-age`` in 6 and 8;
- an incomplete append is answered ``201`` in 3 and 5, ``204`` in 6 and 8;
- a wrong offset is a ``409`` carrying the right one; 8 adds a problem
  document (RFC 9457).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from twisted.web.http_headers import Headers

IETF_VERSIONS = (3, 5, 6, 8)
TUS_VERSION = b"1.0.0"
TUS_EXTENSIONS = b"termination"
PARTIAL_UPLOAD = "application/partial-upload"
TUS_PATCH_TYPE = "application/offset+octet-stream"
PROBLEM_JSON = b"application/problem+json"
MISMATCHING_OFFSET = (
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
)

# Structured-field integers have at most 15 digits (RFC 9651 §3.3.1);
# tus offsets and lengths are plain non-negative integers.
_SF_INTEGER = re.compile(rb"[0-9]{1,15}")
_TUS_INTEGER = re.compile(rb"[0-9]{1,19}")

# Headers the protocols add, for CORS: sent by a browser client, read by it.
REQUEST_HEADERS = (
    b"Upload-Offset, Upload-Complete, Upload-Incomplete, Upload-Length, "
    b"Upload-Draft-Interop-Version, Tus-Resumable, X-HTTP-Method-Override, "
    b"Repr-Digest"
)
RESPONSE_HEADERS = (
    b"Upload-Offset, Upload-Complete, Upload-Incomplete, Upload-Length, "
    b"Upload-Limit, Upload-Draft-Interop-Version, Location, Tus-Resumable, "
    b"Tus-Version, Tus-Extension, Tus-Max-Size"
)


class UnsupportedTus(ValueError):
    """A ``Tus-Resumable`` version other than 1.0.0 (tus: ``412``)."""


@dataclass(frozen=True)
class Dialect:
    """Which protocol (and version) a request speaks; answers go out in it."""

    protocol: str  # "ietf", "tus" or "plain"
    version: int = 0

    @property
    def ietf(self) -> bool:
        return self.protocol == "ietf"

    @property
    def tus(self) -> bool:
        return self.protocol == "tus"

    @property
    def resumable(self) -> bool:
        """Whether the client asked for a resumable upload at all."""
        return self.protocol != "plain"

    def patch_type_ok(self, content_type: bytes | None) -> bool:
        """Whether a PATCH's Content-Type is this protocol's.

        tus requires its type.  The draft requires ``application/partial-upload``
        from 5 on, but tus-js-client's interop-5 PATCH sends none: a PATCH
        without a type is taken; one with another type is not.
        """
        given = None if content_type is None else _media_type(content_type)
        if self.tus:
            return given == TUS_PATCH_TYPE
        if self.ietf:
            return given in (None, "", PARTIAL_UPLOAD)
        return False


PLAIN = Dialect("plain")
TUS = Dialect("tus")


def _media_type(value: bytes) -> str:
    return value.split(b";", 1)[0].strip().decode("latin-1").lower()


def _one(headers: Headers, name: bytes) -> bytes | None:
    values = headers.getRawHeaders(name)
    if not values or len(values) != 1:
        return None
    return values[0].strip(b" \t")


def sf_integer(value: bytes | None) -> int | None:
    """A non-negative structured-field Integer, or None (the field is ignored)."""
    if value is None or not _SF_INTEGER.fullmatch(value.strip(b" \t")):
        return None
    return int(value)


def sf_boolean(value: bytes | None) -> bool | None:
    """A structured-field Boolean (``?1`` / ``?0``), or None."""
    if value is None:
        return None
    value = value.strip(b" \t")
    return {b"?1": True, b"?0": False}.get(value)


def dialect_of(headers: Headers) -> Dialect:
    """The dialect a request speaks; raises UnsupportedTus for another tus."""
    version = sf_integer(_one(headers, b"Upload-Draft-Interop-Version"))
    if version in IETF_VERSIONS:
        return Dialect("ietf", version)
    tus = headers.getRawHeaders(b"Tus-Resumable")
    if tus:
        if tus[0].strip() != TUS_VERSION:
            raise UnsupportedTus("Only tus 1.0.0 is spoken here")
        return TUS
    return PLAIN


def requested_offset(dialect: Dialect, headers: Headers) -> int | None:
    """The ``Upload-Offset`` of a request, None if absent or malformed."""
    value = _one(headers, b"Upload-Offset")
    if dialect.tus:
        if value is None or not _TUS_INTEGER.fullmatch(value):
            return None
        return int(value)
    return sf_integer(value)


def requested_complete(dialect: Dialect, headers: Headers) -> bool | None:
    """Whether the request's content ends the upload; None: not said."""
    if not dialect.ietf:
        return None
    if dialect.version == 3:
        incomplete = sf_boolean(_one(headers, b"Upload-Incomplete"))
        return None if incomplete is None else not incomplete
    return sf_boolean(_one(headers, b"Upload-Complete"))


def names_state(dialect: Dialect, headers: Headers) -> bool:
    """Whether a request carries offset or completeness (HEAD and DELETE must
    not, in the draft: a ``400``)."""
    if not dialect.ietf:
        return False
    names = [b"Upload-Offset"]
    names.append(b"Upload-Incomplete" if dialect.version == 3 else b"Upload-Complete")
    return any(headers.hasHeader(name) for name in names)


def requested_length(dialect: Dialect, headers: Headers) -> int | None:
    """``Upload-Length`` where the dialect has it (tus, and the draft from 6)."""
    value = _one(headers, b"Upload-Length")
    if dialect.tus:
        if value is None or not _TUS_INTEGER.fullmatch(value):
            return None
        return int(value)
    if dialect.ietf and dialect.version >= 6:
        return sf_integer(value)
    return None


@dataclass(frozen=True)
class UploadState:
    """An upload resource as a response describes it."""

    offset: int
    length: int
    complete: bool
    # Seconds the upload resource is kept from now; None: not said.
    max_age: int | None = None


def limit_value(dialect: Dialect, state: UploadState) -> bytes | None:
    """``Upload-Limit`` in the dialect's keys, None where it has none."""
    if not dialect.ietf or dialect.version < 5:
        return None
    parts = [b"max-size=%d" % state.length]
    if state.max_age is not None:
        key = b"expires" if dialect.version == 5 else b"max-age"
        parts.append(key + b"=%d" % max(0, state.max_age))
    return b", ".join(parts)


def state_headers(
    dialect: Dialect, state: UploadState, *, limits: bool = True
) -> list[tuple[bytes, bytes]]:
    """What a response says of the upload resource, in the request's dialect."""
    out: list[tuple[bytes, bytes]] = [(b"Upload-Offset", b"%d" % state.offset)]
    if dialect.tus:
        out.append((b"Upload-Length", b"%d" % state.length))
        out.append((b"Tus-Resumable", TUS_VERSION))
        return out
    if dialect.ietf and dialect.version == 3:
        out.append((b"Upload-Incomplete", b"?0" if state.complete else b"?1"))
    else:
        out.append((b"Upload-Complete", b"?1" if state.complete else b"?0"))
    if not dialect.ietf or dialect.version >= 6:
        out.append((b"Upload-Length", b"%d" % state.length))
    if dialect.ietf:
        out.append((b"Upload-Draft-Interop-Version", b"%d" % dialect.version))
        limit = limit_value(dialect, state) if limits else None
        if limit is not None:
            out.append((b"Upload-Limit", limit))
    return out


def append_status(dialect: Dialect) -> int:
    """The status of an append that left the upload incomplete."""
    if dialect.ietf and dialect.version <= 5:
        return 201
    return 204


def offset_status(dialect: Dialect, found: bool) -> int:
    """The status of an offset retrieval (HEAD) of an upload resource."""
    if dialect.tus:
        return 200 if found else 404
    return 204 if found else 404


def mismatch_problem(expected: int, provided: int | None) -> bytes:
    """The draft's "mismatching-upload-offset" problem document (interop 8)."""
    problem: dict[str, object] = {
        "type": MISMATCHING_OFFSET,
        "title": "offset from request does not match offset of resource",
        "expected-offset": expected,
    }
    if provided is not None:
        problem["provided-offset"] = provided
    return json.dumps(problem).encode("ascii")


def interim_head(dialect: Dialect, location: bytes, state: UploadState) -> bytes:
    """The ``104 (Upload Resumption Supported)`` head for a creation request.

    Only for a draft version the request named (the draft forbids it
    otherwise), with the version, the upload resource and its limits.
    """
    assert dialect.ietf
    lines = [
        b"HTTP/1.1 104 Upload Resumption Supported",
        b"Upload-Draft-Interop-Version: %d" % dialect.version,
        b"Location: " + location,
    ]
    limit = limit_value(dialect, state)
    if limit is not None:
        lines.append(b"Upload-Limit: " + limit)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def options_headers(max_age: int) -> list[tuple[bytes, bytes]]:
    """What ``OPTIONS`` on a slot URL tells resumable clients (tus, draft 6 and 8).

    The size limit is each slot's own, which an ``OPTIONS`` (sent without
    the token) cannot name: the slot request told the client already.
    """
    return [
        (b"Tus-Version", TUS_VERSION),
        (b"Tus-Extension", TUS_EXTENSIONS),
        (b"Upload-Limit", b"min-size=0, max-age=%d" % max_age),
        (b"Accept-Patch", PARTIAL_UPLOAD.encode() + b", " + TUS_PATCH_TYPE.encode()),
    ]


__all__ = [
    "IETF_VERSIONS",
    "PARTIAL_UPLOAD",
    "PLAIN",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "TUS",
    "TUS_PATCH_TYPE",
    "TUS_VERSION",
    "Dialect",
    "UnsupportedTus",
    "UploadState",
    "append_status",
    "dialect_of",
    "interim_head",
    "limit_value",
    "mismatch_problem",
    "names_state",
    "offset_status",
    "options_headers",
    "requested_complete",
    "requested_length",
    "requested_offset",
    "sf_boolean",
    "sf_integer",
    "state_headers",
]
