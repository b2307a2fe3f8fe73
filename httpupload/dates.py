"""XEP-0082 date-times: the one parser for stamps read from stanzas, and the writer.

XEP-0082's DateTime profile is ``CCYY-MM-DDThh:mm:ss[.sss]TZD``, TZD being
``Z`` or ``±hh:mm``. ``datetime.fromisoformat`` takes far more (week dates,
basic format, a space for ``T``, no seconds, ``+0100``), so a stamp it takes
may be one another implementation reads differently or not at all; this
parser takes exactly the profile. Pure code: no clock, no I/O.
"""

from __future__ import annotations

import calendar
import re
import time

__all__ = [
    "MAX_DATETIME_LENGTH",
    "MAX_FRACTION_DIGITS",
    "InvalidDateTime",
    "format_datetime",
    "parse_datetime",
]

#: Digits of a fraction of a second taken (nanoseconds; more says nothing).
MAX_FRACTION_DIGITS = 9
#: The longest valid stamp: ``CCYY-MM-DDThh:mm:ss.fffffffff+hh:mm``.
MAX_DATETIME_LENGTH = 19 + 1 + MAX_FRACTION_DIGITS + 6

_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    rf"(?:\.([0-9]{{1,{MAX_FRACTION_DIGITS}}}))?"
    r"(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))"
)


class InvalidDateTime(ValueError):
    """Text that is not an XEP-0082 date-time; says what is wrong."""


def parse_datetime(text: str) -> float:
    """An XEP-0082 date-time as Unix time; InvalidDateTime for anything else.

    Seconds are required, a fraction of at most ``MAX_FRACTION_DIGITS``
    digits is optional, the zone (``Z`` or ``±hh:mm``) is required; no
    surrounding space, no lower-case ``t`` or ``z``. Years 0001 to 9999.
    """
    if len(text) > MAX_DATETIME_LENGTH:
        raise InvalidDateTime(
            f"A date-time is at most {MAX_DATETIME_LENGTH} characters"
        )
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        raise InvalidDateTime(
            "A date-time must be CCYY-MM-DDThh:mm:ss[.sss] followed by Z or ±hh:mm"
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, utc, sign, zone_hours, zone_minutes = match.groups()[6:]
    if year == 0:
        raise InvalidDateTime("The year 0000 is not a date")
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise InvalidDateTime("No such day")
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidDateTime("No such time of day")
    offset = 0
    if utc is None:
        if int(zone_hours) > 23 or int(zone_minutes) > 59:
            raise InvalidDateTime("No such time zone offset")
        offset = (int(zone_hours) * 60 + int(zone_minutes)) * 60
        if sign == "-":
            offset = -offset
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - offset
    if fraction is not None:
        divisor: int = 10 ** len(fraction)
        return seconds + int(fraction) / divisor
    return float(seconds)


def format_datetime(when: float) -> str:
    """Unix time as an XEP-0082 date-time in UTC, to the second (rounded down)."""
    t = time.gmtime(when)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"
    )
