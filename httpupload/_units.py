"""Numbers and text as people read them, and numbers as stanzas write them.

The one home of what was written several times: a byte count in binary units
(``human_size``: the operator command, the policy's error texts, the ad-hoc
commands and the progress bar of ``httpupload-send`` each had a copy), the bar
of a progress line (``progress_bar``: ``httpupload-admin`` and
``httpupload-send``), a bounded decimal number read from an attribute
(``decimal``: the slot request's ``size`` and a service's ``max-file-size``),
and client-chosen text made safe to show (``display``). XEP-0082 date-times
live in ``httpupload.dates``. Pure code: no clock, no I/O.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "BINARY_UNITS",
    "ESCAPED_CATEGORIES",
    "MAX_DECIMAL_DIGITS",
    "REFUSED_NAME_CATEGORIES",
    "decimal",
    "display",
    "human_size",
    "progress_bar",
]

#: The units above bytes, each 1024 times the one before.
BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(count: float, byte_unit: str = "B") -> str:
    """``512 B``, ``1.5 KiB``, ``2.3 MiB``: binary units, one decimal.

    Under 1024 the count is shown whole, with ``byte_unit`` (``B``, or
    ``bytes`` in sentences); above, in the largest unit that keeps it under
    1024 (PiB at most), to one decimal. A float (a rate) is rounded.
    """
    if count < 1024:
        return f"{count:.0f} {byte_unit}"
    value = float(count)
    for unit in BINARY_UNITS:
        value /= 1024
        if value < 1024 or unit == BINARY_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def progress_bar(fraction: float, width: int = 30) -> str:
    """``[####------]``: ``width`` cells, the done ones ``#`` (fraction 0 to 1)."""
    filled = round(min(1.0, max(0.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


#: Digits of a number read from a stanza: every 64-bit value, and leading
#: zeros to spare. Longer is refused before ``int()``, whose limit on digits
#: (4,300) would otherwise raise.
MAX_DECIMAL_DIGITS = 20
_DIGITS = re.compile(r"[0-9]+")


def decimal(text: str | None, max_digits: int = MAX_DECIMAL_DIGITS) -> int | None:
    """Decimal ASCII digits (no sign, no space, at most ``max_digits``) as an
    int; None for anything else, read before any conversion."""
    if text is None or len(text) > max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)


# Characters a new file name may not hold, by Unicode general category: they
# are invisible, reorder what is displayed (U+202E makes "invoice\u202efdp.exe"
# show as "invoiceexe.pdf"), break lines, or mean nothing yet.
REFUSED_NAME_CATEGORIES = {
    "Cc": "control",
    "Cf": "format (invisible)",
    "Cs": "surrogate",
    "Co": "private-use",
    "Cn": "unassigned",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}
# Characters shown as escapes wherever stored text is displayed: the
# categories a new file name may not hold (invisible, reordering, line
# breaking, terminal escapes, unassigned).
ESCAPED_CATEGORIES = frozenset(REFUSED_NAME_CATEGORIES)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def display(text: str) -> str:
    """``text`` safe to show to people: each character of ``ESCAPED_CATEGORIES``
    becomes a visible escape as Python writes it (``\\u202e``, ``\\x1b``).

    What is shown is then what is stored, in order, with nothing hidden.
    Display only: a backslash is left as it is, so the result is not a
    reversible encoding.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        _escape(c) if unicodedata.category(c) in ESCAPED_CATEGORIES else c for c in text
    )
