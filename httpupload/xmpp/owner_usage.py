"""The owners' ``usage`` command: what they hold and have sent, beside the quotas.

Bytes held now, and the sliding window's files and bytes (live slots
included), each beside the quota that applies (0: no limit), as a result form
and one line for people.
"""

from __future__ import annotations

from twisted.words.xish import domish
from wokkel import data_form

from httpupload._units import human_size
from httpupload.owners import Uploads, UsageReport
from httpupload.xmpp.commands import (
    Command,
    CommandRequest,
    command_element,
    new_session_id,
)
from httpupload.xmpp.paging import field

__all__ = ["NODE_USAGE", "USAGE_FIELDS", "UsageCommand", "size_text", "usage_note"]

NODE_USAGE = "usage"


def size_text(n: int) -> str:
    """A byte count in a sentence: ``512 bytes``, ``1.5 MiB``."""
    return human_size(n, "bytes")


USAGE_FIELDS = (
    ("stored-bytes", "Stored now (bytes)"),
    ("stored-limit", "Storage quota (bytes, 0: no limit)"),
    ("window", "Quota window (seconds)"),
    ("window-files", "Files in the window"),
    ("window-files-limit", "Files per window (0: no limit)"),
    ("window-bytes", "Bytes in the window"),
    ("window-bytes-limit", "Bytes per window (0: no limit)"),
)


def usage_values(report: UsageReport) -> dict[str, int]:
    """The usage form's values, by field."""
    window = report.usage.window
    return {
        "stored-bytes": report.held_bytes,
        "stored-limit": report.total_bytes,
        "window": report.window,
        "window-files": len(window),
        "window-files-limit": report.files_per_window,
        "window-bytes": sum(g.size for g in window),
        "window-bytes-limit": report.bytes_per_window,
    }


def usage_form(report: UsageReport) -> domish.Element:
    """The result form of ``usage``: one field per value."""
    values = usage_values(report)
    form: domish.Element = data_form.Form("result", title="Your usage").toElement()
    for var, label in USAGE_FIELDS:
        form.addChild(field(var, str(values[var]), label))
    return form


def _against(used: str, limit: str | None, unit: str = "") -> str:
    """``2 of 5 files``, or ``2 files (no limit)``."""
    return f"{used} of {limit}{unit}" if limit else f"{used}{unit} (no limit)"


def _window_text(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "24 hours" if hours == 24 else f"{hours} hours"
    return f"{seconds} seconds"


def usage_note(report: UsageReport) -> str:
    """One line for people: ``Stored: 1.2 MiB of 100.0 MiB. In the last …``."""
    v = usage_values(report)

    def size_of(limit: str) -> str | None:
        return size_text(v[limit]) if v[limit] else None

    files_limit = v["window-files-limit"]
    stored = _against(size_text(v["stored-bytes"]), size_of("stored-limit"))
    files = _against(
        str(v["window-files"]), str(files_limit) if files_limit else None, " files"
    )
    window_bytes = _against(size_text(v["window-bytes"]), size_of("window-bytes-limit"))
    return (
        f"Stored: {stored}. In the last {_window_text(report.window)}: "
        f"{files}, {window_bytes}."
    )


class UsageCommand(Command):
    """``usage``: what I hold and have sent, beside my quotas."""

    node = NODE_USAGE
    name = "Show my usage and quotas"

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads

    async def start(self, request: CommandRequest) -> domish.Element:
        report = await self.uploads.usage(request.user)
        return command_element(
            self.node,
            new_session_id(),
            "completed",
            notes=[("info", usage_note(report))],
            payload=usage_form(report),
        )
