"""The XEP-0363 vocabulary the client reads and writes: the namespace, the
headers a PUT may carry, and readers of the numbers and stamps in answers.

At the bottom of ``httpupload.client``: the errors and the parsers both use it.
"""

from __future__ import annotations

from httpupload._units import decimal
from httpupload.dates import InvalidDateTime, parse_datetime

__all__ = ["ALLOWED_HEADERS", "NS_UPLOAD", "positive_int", "read_stamp"]

NS_UPLOAD = "urn:xmpp:http:upload:0"
#: The only slot headers XEP-0363 lets a client copy into its PUT (§4, §8.2).
ALLOWED_HEADERS = ("Authorization", "Cookie", "Expires")


def positive_int(text: str | None) -> int | None:
    """Decimal ASCII digits (no sign, no space, bounded) above zero; else None."""
    number = decimal(text)
    return number if number is not None and number > 0 else None


def read_stamp(value: str | None) -> float | None:
    """An XEP-0082 date-time (a ``<retry stamp>``) as Unix time; else None."""
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except InvalidDateTime:
        return None
