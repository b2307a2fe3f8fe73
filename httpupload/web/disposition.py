"""Which files a browser may show, and Content-Disposition (RFC 6266, RFC 8187).

Images, audio and video are shown inline (that is what chat clients and web
clients preview); SVG and any other XML-based or scriptable type, and
everything else, are served as attachments under their original name, so an
uploaded HTML or SVG file is never rendered on the upload domain.
"""

from __future__ import annotations

from urllib.parse import quote

from httpupload.slots import media_type

INLINE_TYPE_PREFIXES = ("image/", "audio/", "video/")
# Media types under those prefixes that can carry script.
SCRIPTABLE_TYPES = frozenset({"image/svg+xml", "video/vnd.mpegurl"})
# RFC 8187 attr-char, besides ALPHA and DIGIT.
_ATTR_CHARS = "!#$&+-.^_`|~"


def is_inline(content_type: str) -> bool:
    kind = media_type(content_type)
    return (
        kind.startswith(INLINE_TYPE_PREFIXES)
        and kind not in SCRIPTABLE_TYPES
        and not kind.endswith("+xml")
    )


def _ascii_fallback(filename: str) -> str:
    return "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)


def _valid_unicode(filename: str) -> str:
    """The name with any lone surrogate (a damaged record's) as U+FFFD."""
    return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in filename)


def content_disposition(filename: str, inline: bool) -> bytes:
    """``inline``/``attachment``, an ASCII ``filename``, the exact ``filename*``.

    Plain ASCII for any name at all, so it can always be sent.
    """
    kind = "inline" if inline else "attachment"
    encoded = quote(_valid_unicode(filename), safe=_ATTR_CHARS)
    value = (
        f"{kind}; filename=\"{_ascii_fallback(filename)}\"; filename*=UTF-8''{encoded}"
    )
    return value.encode("ascii")
