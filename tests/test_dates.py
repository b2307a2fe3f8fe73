"""XEP-0082 date-times: exactly the profile, nothing ISO 8601 adds."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpupload.dates import (
    MAX_DATETIME_LENGTH,
    InvalidDateTime,
    format_datetime,
    parse_datetime,
)

JAN_1_2027 = 1798761600.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-01T00:00:00Z", JAN_1_2027),
        ("2027-01-01T01:00:00+01:00", JAN_1_2027),
        ("2026-12-31T19:30:00-04:30", JAN_1_2027),
        ("2027-01-01T00:00:00-00:00", JAN_1_2027),
        ("2027-01-01T00:00:00.5Z", JAN_1_2027 + 0.5),
        ("2027-01-01T00:00:00.123456789Z", JAN_1_2027 + 0.123456789),
        ("2028-02-29T00:00:00Z", 1835395200.0),
        ("1969-12-31T23:59:59Z", -1.0),
    ],
)
def test_valid_stamps(text: str, expected: float) -> None:
    """Stamps of the profile, with any zone and an optional fraction, are read."""
    assert parse_datetime(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "2027-W01-1T00:00:00Z",  # ISO week date
        "20270101T000000Z",  # ISO basic format
        "2027-01-01 00:00:00Z",  # space for T
        "2027-01-01T00:00Z",  # no seconds
        "2027-01-01T00:00:00+0100",  # offset without a colon
        "2027-01-01T00:00:00+01",  # offset without minutes
        "2027-01-01T00:00:00",  # no zone
        "2027-01-01",  # a date alone
        "2027-01-01t00:00:00z",  # lower case
        " 2027-01-01T00:00:00Z",  # surrounding space
        "2027-01-01T00:00:00Z\n",
        "12027-01-01T00:00:00Z",  # five-digit year
        "+2027-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",  # no year 0
        "2027-13-01T00:00:00Z",
        "2027-00-01T00:00:00Z",
        "2027-02-29T00:00:00Z",  # not a leap year
        "2027-04-31T00:00:00Z",
        "2027-01-00T00:00:00Z",
        "2027-01-01T24:00:00Z",
        "2027-01-01T00:60:00Z",
        "2027-01-01T00:00:60Z",  # leap seconds are not taken
        "2027-01-01T00:00:00+24:00",
        "2027-01-01T00:00:00+01:60",
        "2027-01-01T00:00:00.Z",  # a point without digits
        "2027-01-01T00:00:00.1234567890Z",  # over nine digits
        "2027-01-01T00:00:00,5Z",  # comma fraction
        "٢٠٢٧-01-01T00:00:00Z",  # non-ASCII digits
        "\uff12\uff10\uff12\uff17-01-01T00:00:00Z",  # full-width digits
        "",
    ],
)
def test_lenient_iso_forms_are_refused(text: str) -> None:
    """What ISO 8601 or fromisoformat allow beyond XEP-0082 is refused."""
    with pytest.raises(InvalidDateTime):
        parse_datetime(text)


def test_long_input_is_refused_before_matching() -> None:
    """Input over the longest valid stamp is refused by its length alone."""
    with pytest.raises(InvalidDateTime, match="at most"):
        parse_datetime("2027-01-01T00:00:00" + "0" * 10_000 + "Z")
    assert len("2027-01-01T00:00:00.123456789+01:00") == MAX_DATETIME_LENGTH


ZONES = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def xep0082(moment: datetime, digits: int) -> str:
    """``moment`` written in the profile, with ``digits`` of fraction."""
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if digits:
        text += "." + f"{moment.microsecond:06d}{'0' * 3}"[:digits]
    offset = moment.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return text + "Z"
    sign = "+" if minutes > 0 else "-"
    return text + f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES
    ),
    digits=st.integers(0, 9),
)
def test_generated_stamps_round_trip(moment: datetime, digits: int) -> None:
    """Any moment written in the profile reads back as the same instant."""
    expected = moment.replace(
        microsecond=int(f"{moment.microsecond:06d}"[: min(digits, 6)].ljust(6, "0"))
    ).timestamp()
    assert parse_datetime(xep0082(moment, digits)) == pytest.approx(expected, abs=1e-4)


@given(st.integers(-62135596800 + 86400, 253402300799 - 86400))
def test_written_stamps_read_back(when: int) -> None:
    """What the service writes (retry stamps) it reads back to the second."""
    text = format_datetime(when)
    assert text.endswith("Z")
    assert parse_datetime(text) == when


@given(st.text(max_size=MAX_DATETIME_LENGTH + 5))
def test_arbitrary_text_gets_a_time_or_its_own_error(text: str) -> None:
    """Any text is either a stamp or InvalidDateTime, never another exception."""
    try:
        parsed = parse_datetime(text)
    except InvalidDateTime:
        return
    assert isinstance(parsed, float)
    assert len(text) <= MAX_DATETIME_LENGTH and text.isascii()


@given(
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
        r"(Z|[+-][0-9]{2}:[0-9]{2})",
        fullmatch=True,
    )
)
def test_well_shaped_stamps_get_a_time_or_its_own_error(text: str) -> None:
    """Shaped like a stamp but out of range (month 13, hour 99): InvalidDateTime."""
    try:
        parse_datetime(text)
    except InvalidDateTime:
        pass
