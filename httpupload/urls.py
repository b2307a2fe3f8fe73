"""Reading a file URL that a person typed or pasted: one strict parser.

The HTTP side finds a file by the last two segments of the request path
(``slots.parse_url_path``), which suits requests: a reverse proxy may keep or
strip a prefix.  Text from an operator (``httpupload-admin take-down URL``)
is another matter: it may be a chat line with a URL in it, a URL with a
fragment that looks like another file's path (``…/<id A>/a.png#/<id B>/b.png``),
or a URL of another service.  So a file URL is read here as a whole:

- ``http`` or ``https``, a host and port that are those of one of the
  service's base URLs (``[http] public_url`` or ``get_url``), no user name;
- a path that is exactly that base's path, then ``<file id>/<file name>``
  (the name percent-encoded or not);
- no fragment (a ``#`` in a file name is ``%23`` in its URL), and no query but
  a PUT URL's ``token=…``, which is ignored;
- at most ``MAX_URL_LENGTH`` characters, none of them control or format
  characters.

Anything else is ``BadFileUrl`` saying which rule failed; the file id comes
from the path alone, never from a query or fragment.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from httpupload.errors import HttpUploadError
from httpupload.slots import parse_url_path

__all__ = ["MAX_URL_LENGTH", "BadFileUrl", "BaseUrl", "FileUrl", "parse_file_url"]

#: A file name of 255 bytes, percent-encoded, is 765 characters; a base URL
#: and a PUT token fit many times over in the rest.
MAX_URL_LENGTH = 8192

DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters no file URL holds (and that would hide or reorder what is shown).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT_RE = re.compile(r"[0-9]{1,5}")


class BadFileUrl(HttpUploadError):
    """Text that is not a URL of one of this service's files; says why."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True)
class BaseUrl:
    """Where the service's file URLs start: scheme, host, port and path."""

    scheme: str
    host: str
    port: int
    path: str
    text: str

    @classmethod
    def parse(cls, url: str) -> BaseUrl:
        """A base URL from the config (already checked there: absolute, ``/``-ended)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {url!r}")
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return cls(
            scheme,
            parts.hostname.lower(),
            parts.port or DEFAULT_PORTS[scheme],
            path,
            url,
        )


@dataclass(frozen=True)
class FileUrl:
    """The file a URL names, and the base it was found under."""

    file_id: str
    filename: str
    base: BaseUrl


def _host_port(authority: str, scheme: str) -> tuple[str, int]:
    """The lowercased host (IPv6 in brackets) and the port, the default if none."""
    if "@" in authority:
        raise BadFileUrl(
            "The URL has a user name or password (…@); file URLs have none"
        )
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise BadFileUrl("The URL's host is a malformed [IPv6 address]")
        host, after = authority[: end + 1], authority[end + 1 :]
    else:
        host, colon, port_text = authority.partition(":")
        after = colon + port_text
    if not host or host == "[]":
        raise BadFileUrl("The URL has no host")
    if after and not after.startswith(":"):
        raise BadFileUrl("The URL's host is followed by something other than :port")
    port_text = after[1:]
    if port_text and not _PORT_RE.fullmatch(port_text):
        raise BadFileUrl("The URL's port is not a number")
    return host.lower(), int(port_text) if port_text else DEFAULT_PORTS[scheme]


def _check_query(query: str) -> None:
    """Only a PUT URL's ``token=…`` may follow the path; it is ignored."""
    for parameter in query.split("&"):
        if parameter and not parameter.startswith("token="):
            raise BadFileUrl(
                "The URL has a query other than a PUT URL's token= "
                "(a ? in a file name is %3F in its URL)"
            )


def parse_file_url(text: str, bases: Iterable[str | BaseUrl]) -> FileUrl:
    """The file id and name of ``text``, a URL under one of ``bases``.

    Raises ``BadFileUrl`` with a one-line reason for anything else; never
    any other exception, whatever the text.
    """
    url = text.strip()
    if not url:
        raise BadFileUrl("No URL given")
    if len(url) > MAX_URL_LENGTH:
        raise BadFileUrl(f"The URL is longer than {MAX_URL_LENGTH} characters")
    for char in url:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            raise BadFileUrl(
                f"The URL contains U+{ord(char):04X}, a control or format character"
            )
    if "#" in url:
        raise BadFileUrl(
            "The URL has a fragment (#…): file URLs have none "
            "(a # in a file name is %23 in its URL)"
        )
    scheme_match = _SCHEME_RE.match(url)
    if scheme_match is None:
        raise BadFileUrl("Not an absolute URL (http://… or https://…)")
    scheme = scheme_match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise BadFileUrl(f"The URL's scheme is {scheme[:16]!r}, not http or https")
    rest = url[scheme_match.end() :]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    path = slash + path
    host, port = _host_port(authority, scheme)
    _check_query(query)
    known = [b if isinstance(b, BaseUrl) else BaseUrl.parse(b) for b in bases]
    under = [
        b
        for b in known
        if (b.scheme, b.host, b.port) == (scheme, host, port)
        and path.startswith(b.path)
    ]
    if not under:
        served = " or ".join(dict.fromkeys(b.text for b in known)) or "(none)"
        raise BadFileUrl(f"The URL is not under this service's URLs: {served}")
    # The longest base first: one base may be below another.
    for base in sorted(under, key=lambda b: len(b.path), reverse=True):
        below = path[len(base.path) :]
        parsed = parse_url_path(("/" + below).encode("utf-8"))
        if below.count("/") == 1 and parsed is not None:
            return FileUrl(parsed[0], parsed[1], base)
    raise BadFileUrl(
        "The URL's path is not a base path, then <file id>/<file name> "
        "(a file id is 22 to 64 of A-Z a-z 0-9 - _)"
    )
