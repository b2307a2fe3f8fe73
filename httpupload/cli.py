"""The operator command moved to ``httpupload.admin`` (#11); this name stays.

``httpupload.cli:main`` is the documented entry point of ``httpupload-admin``
(and of installs made before #11); it is ``httpupload.admin.main``.
"""

# moved to httpupload.admin in #11; the lead removes this shim
from httpupload.admin import *  # noqa: F403
from httpupload.admin import (
    COMMANDS,
    EXIT_CODES,
    EXIT_DECLINED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    Failed,
    build_parser,
    main,
    open_uploads,
)
from httpupload.admin.output import NO_OWNER, Progress, human_size, table
from httpupload.admin.removal import cmd_delete_user, cmd_purge_expired, cmd_take_down
from httpupload.admin.reports import cmd_list, cmd_usage

__all__ = [
    "COMMANDS",
    "EXIT_CODES",
    "EXIT_DECLINED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_USAGE",
    "NO_OWNER",
    "Context",
    "Failed",
    "Progress",
    "build_parser",
    "cmd_delete_user",
    "cmd_list",
    "cmd_purge_expired",
    "cmd_take_down",
    "cmd_usage",
    "human_size",
    "main",
    "open_uploads",
    "table",
]
