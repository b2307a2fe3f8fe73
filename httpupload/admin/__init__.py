"""The operator command: ``httpupload-admin`` or ``python -m httpupload``.

::

    httpupload-admin --config FILE usage [--json]
    httpupload-admin --config FILE list JID [--json]
    httpupload-admin --config FILE delete-user JID [--yes]
    httpupload-admin --config FILE take-down URL
    httpupload-admin --config FILE purge-expired [--batch N]

It reads the service's own config file and works on the same storage folder
while the service runs: the metadata store is SQLite in WAL mode with a busy
timeout, and each file is removed before its record (``httpupload.owners``),
so a run cut short never leaves a file for the service to adopt again.

The modules, along the seams: ``parser`` (arguments), ``run`` (opening and
closing the stores, ``main``), ``reports`` (usage, list), ``removal``
(delete-user, take-down, purge-expired), ``context`` (what a command is
given: arguments, uploads, streams, signals), ``output`` (tables, sizes,
dates, JSON, progress) and ``exits`` (exit statuses).
"""

from __future__ import annotations

from httpupload.admin.context import Context
from httpupload.admin.exits import (
    EXIT_CODES,
    EXIT_DECLINED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Failed,
)
from httpupload.admin.parser import build_parser
from httpupload.admin.run import COMMANDS, main, open_uploads, run_command

__all__ = [
    "COMMANDS",
    "EXIT_CODES",
    "EXIT_DECLINED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_USAGE",
    "Context",
    "Failed",
    "build_parser",
    "main",
    "open_uploads",
    "run_command",
]
