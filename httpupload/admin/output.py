"""How the operator command shows things: sizes, dates, tables, JSON, progress.

Sizes are ``_units.human_size`` (one formatter for every command), and
every stored, client-chosen text (names, owners) goes through
``_units.display`` here, so a listing shows what is stored with nothing
hidden; JSON carries the exact value, every non-ASCII character escaped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TextIO

from httpupload._units import display, human_size, progress_bar

__all__ = [
    "NO_OWNER",
    "Progress",
    "as_json",
    "date",
    "human_size",
    "isatty",
    "iso",
    "owner_text",
    "plural",
    "table",
]

NO_OWNER = "(no owner)"  # files adopted at reconciliation (owner "")


def date(timestamp: float | None, *, never: str = "never") -> str:
    """``2023-11-14 22:13`` (UTC), or ``never``."""
    if timestamp is None:
        return never
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def iso(timestamp: float | None) -> str | None:
    """``2023-11-14T22:13:20Z`` for JSON, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_text(owner: str) -> str:
    """An owner as shown: escaped, or ``(no owner)`` for adopted files."""
    return display(owner) if owner else NO_OWNER


def as_json(report: object) -> str:
    """Indented JSON, every non-ASCII character escaped (``\\u202e``)."""
    return json.dumps(report, indent=2, ensure_ascii=True)


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """Aligned columns; the columns numbered in ``right`` aligned right."""
    widths = [
        max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)
    ]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(header), *(line(row) for row in rows)]


def isatty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for anything that cannot say)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress indication on stderr for long runs.

    On a terminal, one line redrawn in place (``\\r``) at most ten times a
    second, ended by a newline; otherwise (a log, a pipe) a plain line every
    ``interval`` seconds, so short runs print nothing and long ones leave a
    trace.  ``total`` None: a running count without a bar.
    """

    def __init__(
        self,
        label: str,
        unit: str,
        stream: TextIO | None = None,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 30,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = isatty(self.stream)
        self.interval = interval if interval is not None else (0.1 if self.tty else 5)
        self.clock = clock
        self.width = width
        self.done = 0
        self.total: int | None = None
        self._started = clock()
        self._shown_at: float | None = None
        self._shown: tuple[int, int | None] | None = None

    def text(self) -> str:
        """The line as it would be shown now."""
        if self.total is None:
            return f"{self.label}: {self.done} {self.unit}"
        fraction = self.done / self.total if self.total else 1.0
        if not self.tty:
            return (
                f"{self.label}: {self.done}/{self.total} {self.unit} ({fraction:.0%})"
            )
        bar = progress_bar(fraction, self.width)
        return (
            f"{self.label} {bar} {self.done}/{self.total} {self.unit} {fraction:4.0%}"
        )

    def _show(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r" + self.text() + "\x1b[K")
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()
        self._shown_at = now
        self._shown = (self.done, self.total)

    def update(self, done: int, total: int | None = None) -> None:
        """Count ``done`` (of ``total``); shown if the interval has passed."""
        self.done, self.total = done, total
        now = self.clock()
        since = self._shown_at if self._shown_at is not None else self._started
        first_on_tty = self.tty and self._shown_at is None
        if first_on_tty or now - since >= self.interval:
            self._show(now)

    def finish(self) -> None:
        """Show the final count (if anything was shown) and end the line."""
        if self._shown_at is None:
            return
        if self.tty or self._shown != (self.done, self.total):
            self._show(self.clock())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
