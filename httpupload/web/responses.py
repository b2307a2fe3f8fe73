"""Headers every response carries, and the one place errors become statuses."""

from __future__ import annotations

from twisted.web.server import Request

from httpupload.errors import (
    AlreadyStored,
    HttpUploadError,
    IncompleteBody,
    InvalidSlot,
    LengthMismatch,
    LengthRequired,
    ShuttingDown,
    StorageFull,
    StorageUnavailable,
    TooManyUploads,
    TypeMismatch,
)
from httpupload.web.addresses import is_secure

ALLOWED_METHODS = b"OPTIONS, HEAD, GET, PUT"

# XEP-0363 §7 (CORS) and §8.1 (isolation of user content).  No
# Allow-Credentials: it is invalid beside a wildcard origin, and the slot's
# Authorization header is sent explicitly, not as a browser credential.
COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Access-Control-Allow-Methods", ALLOWED_METHODS),
    (
        b"Access-Control-Allow-Headers",
        b"Authorization, Content-Type, Range, If-Range, If-None-Match, "
        b"If-Modified-Since",
    ),
    (
        b"Access-Control-Expose-Headers",
        b"ETag, Repr-Digest, Content-Range, Content-Length, Content-Disposition, "
        b"Accept-Ranges, Last-Modified",
    ),
    (b"Access-Control-Max-Age", b"86400"),
    (b"Content-Security-Policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
)

_STATUSES: tuple[tuple[type[HttpUploadError], int], ...] = (
    (InvalidSlot, 403),
    (LengthRequired, 411),
    (LengthMismatch, 400),
    (TypeMismatch, 400),
    (IncompleteBody, 400),
    (AlreadyStored, 409),
    (StorageFull, 507),
    (StorageUnavailable, 503),
    (TooManyUploads, 429),
    (ShuttingDown, 503),
)


HSTS = b"max-age=31536000"


def apply_common_headers(request: Request) -> None:
    for name, value in COMMON_HEADERS:
        request.setHeader(name, value)
    site = getattr(getattr(request, "channel", None), "site", None)
    if is_secure(request, getattr(site, "trusted_proxies", ())):
        request.setHeader(b"Strict-Transport-Security", HSTS)


def http_status(error: HttpUploadError) -> int:
    """The status for a refused upload; anything unforeseen is a 500."""
    for kind, status in _STATUSES:
        if isinstance(error, kind):
            return status
    return 500


def plain(request: Request, status: int, text: str) -> bytes:
    """A short text/plain response body, with the status set."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    body = (text + "\n").encode("utf-8")
    request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
    return body


def refuse(request: Request, error: HttpUploadError) -> bytes:
    return plain(request, http_status(error), str(error))
