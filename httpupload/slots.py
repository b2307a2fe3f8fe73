"""Slots: minting and checking the signed tokens, and the URLs that carry them.

Pure code with the clock passed in.  A token is ``v2.<kid>.<payload>.<mac>``:
``kid`` names the signing key in the service's ``KeyRing``, the payload is
compact JSON in unpadded base64url, the MAC an HMAC-SHA256 over everything
before it with that key.  Everything the PUT is judged by (file id, name,
size, type, expiry, owner) is inside the MAC, so the HTTP side needs no state
to check a slot, and several HTTP nodes that share the ring can check each
other's slots.  Tokens minted before key ids, ``v1.<payload>.<mac>``, are
still checked, with the key of the legacy id, so an upgrade refuses no slot.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from twisted.internet.interfaces import IReactorTime

from httpupload._units import REFUSED_NAME_CATEGORIES
from httpupload.errors import BadSlotRequest, InvalidSlot
from httpupload.keys import KEY_ID_RE, LEGACY_KEY_ID, KeyRing

TOKEN_VERSION = "v2"  # noqa: S105 (a format tag, not a secret)
LEGACY_TOKEN_VERSION = "v1"  # noqa: S105
# 24 random bytes: 192 bits, 32 URL-safe characters.
FILE_ID_BYTES = 24
FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
MAX_FILENAME_BYTES = 255
# The query parameter of a PUT URL that carries its token, for clients (and
# the older XEP-0363 namespaces) that cannot send slot headers.
TOKEN_PARAMETER = "token"  # noqa: S105 (a parameter name)

# RFC 9110 §8.3.1 media-type, ASCII only (no obs-text): what can be stored,
# signed and written back as a Content-Type header by every backend.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED_STRING = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE_RE = re.compile(
    rf"{_TCHARS}/{_TCHARS}"
    rf"(?:[ \t]*;[ \t]*(?:{_TCHARS}=(?:{_TCHARS}|{_QUOTED_STRING}))?)*"
)
MAX_CONTENT_TYPE_LENGTH = 255
# Two format characters that names need and that reorder nothing: the zero
# width non-joiner and joiner, which Persian and Indic words and emoji
# sequences (👨‍👩‍👧) are written with.
ALLOWED_FORMAT_CHARACTERS = frozenset("\u200c\u200d")


@dataclass(frozen=True)
class Slot:
    """What a PUT URL allows: one upload of ``size`` bytes to one path."""

    file_id: str
    filename: str
    size: int
    content_type: str | None
    expires: int
    owner: str

    @property
    def path(self) -> str:
        """The URL path below the service's base URL, percent-encoded."""
        return url_path(self.file_id, self.filename)


@dataclass(frozen=True)
class SlotUrls:
    """The shape of a slot's URLs: where it is PUT (token included) and fetched.

    The one place that says how a token rides with a PUT: in the URL's query
    (``?token=``), for every client, and as a bearer token in the slot's
    ``Authorization`` header, for those (XEP-0363 ``:0``) that send headers.
    """

    put_base: str
    get_base: str

    def put_url(self, slot: Slot, token: str) -> str:
        return f"{self.put_base}{slot.path}?{TOKEN_PARAMETER}={token}"

    def get_url(self, slot: Slot) -> str:
        return self.get_base + slot.path

    @staticmethod
    def put_headers(token: str) -> dict[str, str]:
        """The headers a client sends with its PUT."""
        return {"Authorization": f"Bearer {token}"}


def new_file_id() -> str:
    """A fresh random URL part, unguessable (XEP-0363 §8.3)."""
    return secrets.token_urlsafe(FILE_ID_BYTES)


def url_path(file_id: str, filename: str) -> str:
    """``<id>/<name>`` with the name percent-encoded per RFC 3986 (UTF-8)."""
    return f"{file_id}/{quote(filename, safe='')}"


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def check_filename(name: str) -> str:
    """Return ``name`` if it can be a single URL segment and a file name.

    The rule for names in URL paths, which may be names stored by earlier
    versions; a name asked for in a slot request meets ``check_new_filename``.
    """
    if not name:
        raise BadSlotRequest("The filename attribute is empty")
    if name in (".", ".."):
        raise BadSlotRequest("The filename attribute may not be '.' or '..'")
    if "/" in name or "\\" in name:
        raise BadSlotRequest("The filename attribute may not contain '/' or '\\'")
    if any(_is_control(c) for c in name):
        raise BadSlotRequest("The filename attribute contains control characters")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise BadSlotRequest(
            f"The filename attribute is longer than {MAX_FILENAME_BYTES} bytes"
        )
    return name


def check_new_filename(name: str) -> str:
    """Return ``name`` if a slot may be granted for it (``check_filename``, and more).

    Refuses any character of ``REFUSED_NAME_CATEGORIES``, naming the first,
    so that what a listing shows is what the file is called.
    """
    for char in name:
        kind = REFUSED_NAME_CATEGORIES.get(unicodedata.category(char))
        if kind is not None and char not in ALLOWED_FORMAT_CHARACTERS:
            raise BadSlotRequest(
                f"The filename attribute contains U+{ord(char):04X}, a {kind} "
                "character, which file names may not hold"
            )
    return check_filename(name)


def check_content_type(value: str | None) -> str | None:
    """A media type that can be served as a header; None if none was given.

    An empty value (or spaces only) counts as none. Otherwise the value,
    without surrounding spaces, must be ASCII, free of control characters
    but HTAB, at most ``MAX_CONTENT_TYPE_LENGTH`` characters and an RFC 9110
    media type: ``type/subtype``, then ``; name=value`` parameters whose
    values are tokens or quoted strings. BadSlotRequest says which rule failed.
    """
    if value is None:
        return None
    value = value.strip(" \t")
    if not value:
        return None
    if len(value) > MAX_CONTENT_TYPE_LENGTH:
        raise BadSlotRequest(
            f"The content-type attribute is longer than {MAX_CONTENT_TYPE_LENGTH} "
            "characters"
        )
    if not value.isascii():
        raise BadSlotRequest(
            "The content-type attribute must be ASCII: it is sent back as an "
            "HTTP header"
        )
    if any(c != "\t" and (c < " " or c == "\x7f") for c in value):
        raise BadSlotRequest("The content-type attribute contains control characters")
    if not _MEDIA_TYPE_RE.fullmatch(value):
        raise BadSlotRequest(
            "The content-type attribute is not a valid media type "
            "(type/subtype, then ; name=value parameters)"
        )
    return value


def media_type(value: str) -> str:
    """The ``type/subtype`` of a Content-Type, lowercased, without parameters."""
    return value.split(";", 1)[0].strip().lower()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SlotSigner:
    """Mints slots and checks tokens with one keyring and one clock."""

    def __init__(self, key: bytes | KeyRing, clock: IReactorTime) -> None:
        """``key``: a ``KeyRing``, or one key (a ring of one, the legacy id)."""
        self.keyring = key if isinstance(key, KeyRing) else KeyRing.single(key)
        self.clock = clock

    def mint(
        self,
        filename: str,
        size: int,
        content_type: str | None,
        owner: str,
        lifetime: int,
    ) -> tuple[Slot, str]:
        """A new slot valid for ``lifetime`` seconds, and its token."""
        slot = Slot(
            file_id=new_file_id(),
            filename=filename,
            size=size,
            content_type=content_type,
            expires=int(self.clock.seconds()) + lifetime,
            owner=owner,
        )
        return slot, self.sign(slot)

    @staticmethod
    def _mac(key: bytes, signed: str) -> str:
        digest = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
        return _b64encode(digest)

    def sign(self, slot: Slot) -> str:
        payload = json.dumps(
            {
                "i": slot.file_id,
                "n": slot.filename,
                "s": slot.size,
                "t": slot.content_type,
                "e": slot.expires,
                "o": slot.owner,
            },
            separators=(",", ":"),
            sort_keys=True,
            ensure_ascii=False,
        )
        ring = self.keyring
        encoded = _b64encode(payload.encode("utf-8"))
        signed = f"{TOKEN_VERSION}.{ring.current_id}.{encoded}"
        return f"{signed}.{self._mac(ring.current_key, signed)}"

    def verify(self, token: str, file_id: str, filename: str) -> Slot:
        """The slot of ``token`` if it is genuine, unexpired and for this URL."""
        slot = self.decode(token)
        if slot.file_id != file_id or slot.filename != filename:
            raise InvalidSlot("The slot is for another URL")
        if self.clock.seconds() >= slot.expires:
            raise InvalidSlot("The slot has expired")
        return slot

    def decode(self, token: str) -> Slot:
        """The slot of a genuine token, expired or not."""
        parts = token.split(".")
        if len(parts) == 4 and parts[0] == TOKEN_VERSION:
            key_id = parts[1]
            if not KEY_ID_RE.fullmatch(key_id):
                raise InvalidSlot("Malformed slot token")
        elif len(parts) == 3 and parts[0] == LEGACY_TOKEN_VERSION:
            key_id = LEGACY_KEY_ID
        else:
            raise InvalidSlot("Malformed slot token")
        key = self.keyring.get(key_id)
        if key is None:
            raise InvalidSlot("The slot was signed with a retired key")
        signed = ".".join(parts[:-1])
        if not token.isascii():
            # (compare_digest takes ASCII strings only)
            raise InvalidSlot("Malformed slot token")
        expected = self._mac(key, signed)
        if not hmac.compare_digest(expected, parts[-1]):
            raise InvalidSlot("Bad slot signature")
        try:
            fields = json.loads(_b64decode(parts[-2]).decode("utf-8"))
            slot = Slot(
                file_id=fields["i"],
                filename=fields["n"],
                size=fields["s"],
                content_type=fields["t"],
                expires=fields["e"],
                owner=fields["o"],
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise InvalidSlot("Malformed slot token") from None
        return slot


def parse_url_path(path: bytes) -> tuple[str, str] | None:
    """``(file_id, filename)`` from the last two segments of a request path.

    Only the last two segments count, so the service works both behind a
    reverse proxy that strips a prefix and one that keeps it.  Returns None
    for anything that is not a well-formed file URL.
    """
    path = path.split(b"?", 1)[0]
    segments = path.split(b"/")
    if len(segments) < 3 or segments[0] != b"":
        return None
    raw_id, raw_name = segments[-2], segments[-1]
    try:
        file_id = raw_id.decode("ascii")
        filename = unquote_to_bytes(raw_name).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not FILE_ID_RE.fullmatch(file_id):
        return None
    try:
        check_filename(filename)
    except BadSlotRequest:
        return None
    return file_id, filename
