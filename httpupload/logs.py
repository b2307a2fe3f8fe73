"""Log output for log shippers, and the rule that keeps capabilities out of logs.

``twistd -n --logger httpupload.logs.json_observer httpupload --config FILE``
writes every event (slots, refusals, uploads, the access log, the component
link) to stdout as a JSON record, one per line (twisted.logger's own
format; ``log_format`` and ``log_level`` are always there, the event's fields
beside them).

A file id is a capability (whoever has it can download the file), so no log,
text or JSON, may hold a whole one: code logs ``short_id(file_id)`` (six
characters), and ``redact`` shortens any id inside a text that may hold one
(an object key, a path, a URL). The JSON observer passes every string field
through ``redact`` as a second line, since JSON carries fields whole where the
text rendering would have cut them with ``{id:.6}``. Nothing logged carries a
secret or a token either.
"""

from __future__ import annotations

import re
import sys
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, jsonFileLogObserver
from zope.interface import implementer

# A file id: 24 random bytes in unpadded base64url, 32 characters, standing
# alone (not inside a longer run such as a token or a digest).
_FILE_ID = re.compile(
    r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{6})[A-Za-z0-9_-]{26}(?![A-Za-z0-9_-])"
)


def short_id(file_id: str) -> str:
    """The six characters of a file id that logs may show, and an ellipsis."""
    return f"{file_id[:6]}…"


def redact(text: str) -> str:
    """``text`` with every file id in it cut to its first six characters."""
    return _FILE_ID.sub(r"\1…", text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    return value


def json_observer(stream: IO[str] | None = None) -> ILogObserver:
    """A log observer factory for ``twistd --logger``: JSON lines on stdout."""
    return _Redacting(jsonFileLogObserver(stream or sys.stdout, recordSeparator=""))


@implementer(ILogObserver)
class _Redacting:
    """Passes each event on with every string field redacted."""

    def __init__(self, write: ILogObserver) -> None:
        self._write = write

    def __call__(self, event: LogEvent) -> None:
        # A copy: other observers of the same event keep its own fields.
        self._write({key: _redacted(value) for key, value in event.items()})


__all__ = ["json_observer", "redact", "short_id"]
