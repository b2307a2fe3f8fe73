"""Test-only pieces shared by test files (the harness is ``httpupload.testing``)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from httpupload.metadata import FileRecord


def header(response: Any, name: str) -> str | None:
    """The first value of a response header (a treq response or an ``Answer``)."""
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def digest_of(data: bytes) -> str:
    """The ``Repr-Digest`` value of ``data``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def assert_common_headers(response: Any) -> None:
    """The CORS and hardening headers every response carries."""
    assert header(response, "Access-Control-Allow-Origin") == "*"
    assert "PUT" in (header(response, "Access-Control-Allow-Methods") or "")
    assert "Authorization" in (header(response, "Access-Control-Allow-Headers") or "")
    exposed = header(response, "Access-Control-Expose-Headers") or ""
    for name in ("ETag", "Repr-Digest", "Content-Range", "Content-Length"):
        assert name in exposed
    assert header(response, "Content-Security-Policy") == (
        "default-src 'none'; frame-ancestors 'none'"
    )
    assert header(response, "X-Content-Type-Options") == "nosniff"
    assert header(response, "Referrer-Policy") == "no-referrer"


def record(
    file_id: str, created: float, size: int = 10, owner: str = "a@x", **kw: Any
) -> FileRecord:
    """A slot's record as a grant makes it (five minutes to PUT, a day served);
    ``kw`` overrides any field."""
    values: dict[str, Any] = dict(
        file_id=file_id,
        owner=owner,
        filename="f.txt",
        size=size,
        content_type=None,
        purpose="message",
        created=created,
        slot_expires=created + 300,
        expires=created + 86400,
    )
    values.update(kw)
    return FileRecord(**values)
