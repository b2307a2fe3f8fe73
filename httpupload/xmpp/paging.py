"""Data forms that stay under servers' stanza limits: pages of entries.

A form listing many entries (files, say) can outgrow what a server relays:
Prosody's default c2s stanza limit is 256 KiB, ejabberd's max_stanza_size is
often 64 KiB, and a server may relay to a client with less.  So a listing is
cut into pages, each at most ``max_items`` entries and ``MAX_FORM_BYTES`` of
XML, each going on after the last entry shown (by a key giving a total
order), so that paging shows each entry once even while entries come and go.
Generic: the entries, their key and their size are the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from twisted.words.xish import domish

from httpupload.xmpp.commands import NS_DATA

__all__ = [
    "MAX_FORM_BYTES",
    "PAGE_TEXT_BYTES",
    "Page",
    "budget",
    "field",
    "page_of",
    "xml_size",
]

#: The most XML one form may take.  100 names of 255 bytes would be 200 KB.
#: The command and IQ around the form add a few hundred bytes.
MAX_FORM_BYTES = 16 * 1024
#: Room kept in each form for its title and instructions, which name the page.
PAGE_TEXT_BYTES = 512


class Ordered(Protocol):
    """A key that pages are cut by: comparable with ``>``."""

    def __gt__(self, other: Any, /) -> bool: ...


T = TypeVar("T")
K = TypeVar("K", bound=Ordered)


def xml_size(element: domish.Element) -> int:
    """Bytes of ``element`` serialized (UTF-8), as a server counts them."""
    return len(element.toXml().encode("utf-8"))


def budget(empty_form: domish.Element) -> int:
    """Bytes left for entries in a form whose fixed part is ``empty_form``."""
    return MAX_FORM_BYTES - xml_size(empty_form) - PAGE_TEXT_BYTES


def field(
    var: str, value: str | None = None, label: str | None = None
) -> domish.Element:
    """A data form ``<field/>`` (in a result's ``<reported/>`` or ``<item/>``)."""
    element = domish.Element((NS_DATA, "field"))
    element["var"] = var
    if label is not None:
        element["label"] = label
    if value is not None:
        element.addElement("value", content=value)
    return element


@dataclass(frozen=True)
class Page(Generic[T, K]):
    """One page of a listing: its entries, and where it stands in the whole."""

    items: list[T]
    offset: int  # entries before this page
    total: int
    more: bool  # entries after it
    # The key of the last entry shown, where the next page starts; None if
    # this is the last page.
    cursor: K | None = None

    @property
    def whole(self) -> bool:
        """The listing fits in this one page."""
        return self.offset == 0 and not self.more

    def span(self) -> str:
        """``11-20 of 35``."""
        return f"{self.offset + 1}-{self.offset + len(self.items)} of {self.total}"


def page_of(
    items: Sequence[T],
    cursor: K | None,
    key: Callable[[T], K],
    size: Callable[[T], int],
    room: int,
    max_items: int,
) -> Page[T, K]:
    """The entries after ``cursor`` (all: None) that fit in ``room`` bytes.

    ``items`` are in ``key`` order; a page holds at least one entry (one
    entry is a few KiB at most) and at most ``max_items``.
    """
    after = list(items) if cursor is None else [i for i in items if key(i) > cursor]
    shown: list[T] = []
    used = 0
    for item in after:
        cost = size(item)
        if shown and (used + cost > room or len(shown) >= max_items):
            break
        shown.append(item)
        used += cost
    more = len(shown) < len(after)
    return Page(
        shown,
        len(items) - len(after),
        len(items),
        more,
        key(shown[-1]) if more else None,
    )
