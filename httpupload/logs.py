"""Log output for log shippers: one JSON object per event.

``twistd -n --logger httpupload.logs.json_observer httpupload --config FILE``
writes every event (slots, refusals, uploads, the access log, the component
link) to stdout as a JSON record, one per line (twisted.logger's own
format; ``log_format`` and ``log_level`` are always there, the event's fields
beside them).  Nothing logged anywhere carries a secret, a token or a whole
file URL: access log lines keep six characters of a file id.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer() -> ILogObserver:
    """A log observer factory for ``twistd --logger``: JSON lines on stdout."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


__all__ = ["json_observer"]
