"""Pure checks of a request head as it comes off the wire (RFC 9110, RFC 9112).

Everything here takes client bytes and returns a plain answer, never raises,
and converts no number longer than ``MAX_DIGITS`` digits (Python refuses to
read more than 4,300 digits at all, and no length or offset needs more than
19).  ``UploadChannel`` uses these before twisted.web parses the same headers,
so that a bad head gets a 400 with a short reason instead of a bare 400, a
dropped connection or an escaped ``ValueError``.
"""

from __future__ import annotations

import re

from twisted.web.http_headers import Headers

# 19 digits hold any 64-bit length; a longer number is no length we serve.
MAX_DIGITS = 19

_DIGITS = re.compile(rb"[0-9]{1,%d}" % MAX_DIGITS)
# RFC 9112 §3.2.2: absolute-form.  Only http and https name this service.
_ABSOLUTE = re.compile(rb"(?i:https?)://[^/?#]*")
# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ]; empty is allowed.
_HOST = re.compile(
    rb"(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?"
)


def origin_form(target: bytes) -> bytes:
    """The request target with an ``http(s)://authority`` prefix removed.

    RFC 9112 §3.2.2: a server must accept the absolute form; the path and
    query that follow the authority are then used as if sent in origin form
    (``http://host`` alone is ``/``).  Other forms are returned as they are.
    """
    match = _ABSOLUTE.match(target)
    if match is None:
        return target
    rest = target[match.end() :]
    return rest if rest.startswith(b"/") else b"/" + rest


def content_length(value: bytes) -> int | None:
    """A ``Content-Length`` value (1 to 19 ASCII digits), None if not one.

    RFC 9110 §8.6: ``1*DIGIT``; signs, spaces inside, lists (``5, 5``) and
    numbers longer than any length we could take are all refused.
    """
    value = value.strip(b" \t")
    if _DIGITS.fullmatch(value) is None:
        return None
    return int(value)


def valid_host(value: bytes) -> bool:
    """Whether a ``Host`` value is ``uri-host [":" port]`` (RFC 9110 §7.2)."""
    return _HOST.fullmatch(value.strip(b" \t")) is not None


def head_problem(method: bytes, version: bytes, headers: Headers) -> str | None:
    """Why a request head must get a 400, or None if it may go on.

    - RFC 9112 §3.2: an HTTP/1.1 request without ``Host``, any request with
      several, or one whose value is not a host.
    - RFC 9110 §14.5: a ``PUT`` with ``Content-Range`` (no partial PUT here),
      refused before any byte of it is stored.
    """
    hosts = headers.getRawHeaders(b"Host") or []
    if len(hosts) > 1:
        return "Host must be given once"
    if not hosts and version == b"HTTP/1.1":
        return "Host is required in HTTP/1.1"
    if hosts and not valid_host(hosts[0]):
        return "Host is not a valid host"
    if method == b"PUT" and headers.hasHeader(b"Content-Range"):
        return "Content-Range is not allowed in a PUT: uploads are whole files"
    return None


__all__ = ["MAX_DIGITS", "content_length", "head_problem", "origin_form", "valid_host"]
