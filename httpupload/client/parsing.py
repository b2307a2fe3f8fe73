"""Reading the answers of an XEP-0363 service: its disco#info limit and a slot.

Pure functions of stanzas (no stream, no clock): what ``UploadClient`` makes
of disco#info and of a ``<slot/>``, and the header rules of the XEP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from httpupload.client.errors import ProtocolError
from httpupload.client.xep import ALLOWED_HEADERS, NS_UPLOAD, positive_int

__all__ = [
    "Slot",
    "UploadService",
    "max_file_size",
    "parse_slot",
    "query_of",
    "slot_headers",
    "without_query",
]

_ALLOWED = {name.lower(): name for name in ALLOWED_HEADERS}


@dataclass(frozen=True)
class UploadService:
    """An upload service found through disco, with its advertised limit."""

    jid: JID
    #: ``max-file-size`` from its XEP-0128 form; None if it advertises none.
    max_file_size: int | None


@dataclass(frozen=True)
class Slot:
    """A slot: where to PUT (with which headers) and the GET URL to share."""

    put_url: str
    get_url: str
    #: The allowed headers to send, newlines stripped, in the slot's order.
    headers: tuple[tuple[str, str], ...]
    filename: str
    size: int
    content_type: str | None


def slot_headers(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers a PUT may carry, from a slot's ``(name, value)`` pairs.

    Newlines (CR and LF) are stripped from names and values, names other than
    Authorization, Cookie and Expires (compared case-insensitively) are
    dropped, and the order of what remains is kept (XEP-0363 §4, §8.2).
    """
    kept = []
    for raw_name, raw_value in pairs:
        name = _strip_newlines(raw_name).strip()
        canonical = _ALLOWED.get(name.lower())
        if canonical is None:
            continue
        kept.append((canonical, _strip_newlines(raw_value)))
    return tuple(kept)


def _strip_newlines(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


def without_query(url: str) -> str:
    """``url`` without its query and fragment (a query may hold a token)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _http_url(url: str | None) -> bool:
    return url is not None and url.lower().startswith(("https://", "http://"))


def parse_slot(
    element: domish.Element, filename: str, size: int, content_type: str | None
) -> Slot:
    """A ``<slot xmlns='urn:xmpp:http:upload:0'>`` as a ``Slot``."""
    put = next(element.elements(NS_UPLOAD, "put"), None)
    get = next(element.elements(NS_UPLOAD, "get"), None)
    put_url = put.getAttribute("url") if put is not None else None
    get_url = get.getAttribute("url") if get is not None else None
    if put is None or put_url is None or not _http_url(put_url):
        raise ProtocolError("the slot has no HTTP(S) PUT URL")
    if get_url is None or not _http_url(get_url):
        raise ProtocolError("the slot has no HTTP(S) GET URL")
    pairs = [
        (header.getAttribute("name") or "", str(header))
        for header in put.elements(NS_UPLOAD, "header")
    ]
    return Slot(
        put_url=_strip_newlines(put_url).strip(),
        get_url=_strip_newlines(get_url).strip(),
        headers=slot_headers(pairs),
        filename=filename,
        size=size,
        content_type=content_type,
    )


def max_file_size(info: Any) -> int | None:
    """``max-file-size`` of a wokkel ``DiscoInfo``'s XEP-0363 form; else None."""
    form = info.extensions.get(NS_UPLOAD)
    if form is None:
        return None
    field = form.fields.get("max-file-size")
    if field is None:
        return None
    return positive_int(None if field.value is None else str(field.value))


def query_of(iq: domish.Element, namespace: str) -> domish.Element:
    """The ``<query xmlns=namespace>`` of an IQ result; ProtocolError if none."""
    query: domish.Element | None = next(iq.elements(namespace, "query"), None)
    if query is None:
        raise ProtocolError(f"{iq.getAttribute('from', '?')} sent no {namespace} query")
    return query
