"""httpupload._units: byte counts, progress bars, bounded decimals, display."""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from httpupload._units import (
    BINARY_UNITS,
    ESCAPED_CATEGORIES,
    MAX_DECIMAL_DIGITS,
    decimal,
    display,
    human_size,
    progress_bar,
)

_SIZE = re.compile(r"(\d+) (B|bytes)|(\d+\.\d) (KiB|MiB|GiB|TiB|PiB)")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024, "1.0 MiB"),
        (26214400, "25.0 MiB"),
        (5 * 1024**4, "5.0 TiB"),
        (1024**6, "1024.0 PiB"),
        (262144.0, "256.0 KiB"),
        (1.6, "2 B"),
    ],
)
def test_human_size_examples(count: float, text: str) -> None:
    """Whole bytes under 1024, then one decimal in the largest fitting unit."""
    assert human_size(count) == text


def test_human_size_in_sentences_says_bytes() -> None:
    """``byte_unit`` names the unit of small counts only (``512 bytes``)."""
    assert human_size(512, "bytes") == "512 bytes"
    assert human_size(2048, "bytes") == "2.0 KiB"


@given(st.integers(min_value=0, max_value=2**70))
def test_human_size_is_one_number_and_one_unit(count: int) -> None:
    """Any count reads as a number and a unit, under 1024 of it below PiB."""
    text = human_size(count)
    match = _SIZE.fullmatch(text)
    assert match is not None, text
    if match.group(3) is not None and match.group(4) != "PiB":
        assert float(match.group(3)) <= 1024.0


@given(st.integers(min_value=1024, max_value=2**60))
def test_human_size_is_close_to_the_count(count: int) -> None:
    """The shown value times its unit is the count, to the rounding of one decimal.

    Compared exactly (``Fraction``): in floats, a count near a rounding tie
    made the check itself fail by an ulp.  The count becomes a float on the
    way (exact below 2**53; within 2**7 of itself up to 2**60).
    """
    number, unit = human_size(count).split()
    scale = 1024 ** (BINARY_UNITS.index(unit) + 1)
    error = abs(Fraction(number) * scale - count)
    assert error <= Fraction(1, 20) * scale + (0 if count < 2**53 else 2**7)


@given(st.integers(min_value=0, max_value=2**60), st.integers(0, 2**60))
def test_human_size_keeps_the_order_of_units(a: int, b: int) -> None:
    """A larger count never shows a smaller unit."""
    small, large = sorted((a, b))
    units = ("B", *BINARY_UNITS)
    assert units.index(human_size(small).split()[1]) <= units.index(
        human_size(large).split()[1]
    )


@given(st.floats(min_value=-1, max_value=2), st.integers(min_value=0, max_value=80))
def test_progress_bar_has_its_width_and_fills_in_order(
    fraction: float, width: int
) -> None:
    """A bar is ``width`` cells in brackets, done cells first, clamped to 0-100 %."""
    bar = progress_bar(fraction, width)
    assert bar.startswith("[") and bar.endswith("]")
    cells = bar[1:-1]
    assert len(cells) == width
    assert re.fullmatch(r"#*-*", cells)


def test_progress_bar_examples() -> None:
    """Half of ten cells is five, the ends are empty and full."""
    assert progress_bar(0.5, 10) == "[#####-----]"
    assert progress_bar(0, 4) == "[----]"
    assert progress_bar(1, 4) == "[####]"


@given(st.integers(min_value=0, max_value=10**MAX_DECIMAL_DIGITS - 1))
def test_decimal_reads_its_own_digits(number: int) -> None:
    """Every number of at most MAX_DECIMAL_DIGITS digits reads back as itself."""
    assert decimal(str(number)) == number
    assert decimal(str(number).zfill(MAX_DECIMAL_DIGITS)) == number


@given(st.text())
def test_decimal_takes_ascii_digits_only(text: str) -> None:
    """Anything but 1 to MAX_DECIMAL_DIGITS ASCII digits is None, never an error."""
    expected_ok = (
        0 < len(text) <= MAX_DECIMAL_DIGITS and text.isascii() and text.isdigit()
    )
    assert (decimal(text) is not None) == expected_ok


@pytest.mark.parametrize("text", ["1" * 5000, "+5", " 5", "5 ", "-5", "١٢٣", "5.0", ""])
def test_decimal_refuses_before_converting(text: str) -> None:
    """Signs, spaces, other digits and thousands of digits read as None."""
    assert decimal(text) is None


def test_decimal_of_nothing_is_none() -> None:
    """A missing attribute (None) reads as None."""
    assert decimal(None) is None


@given(st.text())
def test_display_shows_no_escaped_category(text: str) -> None:
    """What ``display`` returns holds no character of an escaped category."""
    shown = display(text)
    assert not any(unicodedata.category(c) in ESCAPED_CATEGORIES for c in shown)


@given(st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "Zs"))))
def test_display_leaves_printable_text_alone(text: str) -> None:
    """Printable ASCII is shown as it is."""
    assert display(text) == text


def test_display_makes_reordering_and_escapes_visible() -> None:
    """RIGHT-TO-LEFT OVERRIDE and a terminal escape are shown as Python escapes."""
    assert display("invoice\u202efdp.exe") == "invoice\\u202efdp.exe"
    assert display("\x1b]0;x\x07") == "\\x1b]0;x\\x07"
