"""Moved to ``httpupload.client.send`` in #11; the lead removes this shim.

Kept so that the ``httpupload-send`` console script (``httpupload.send:main``
in pyproject.toml) and ``python -m httpupload.send`` keep working until they
name ``httpupload.client.send``.
"""

from httpupload.client.arguments import (  # noqa: F401
    PROG,
    SECRET_OPTIONS,
    Options,
    UsageError,
    build_parser,
    parse_options,
    parse_server,
    read_password,
)
from httpupload.client.login import (  # noqa: F401
    CLOSE_TIMEOUT,
    DEFAULT_PORT,
    LoginFailed,
    XmppSession,
    login,
)
from httpupload.client.send import *  # noqa: F403
from httpupload.client.send import (  # noqa: F401
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UPLOAD,
    EXIT_USAGE,
    MAX_ERROR_LINE,
    NS_OOB,
    ProgressBar,
    main,
    oob_message,
    render_progress,
    run,
)

if __name__ == "__main__":
    main()
