"""Test-only checks shared by the HTTP tests (the harness is ``httpupload.testing``)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any


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
