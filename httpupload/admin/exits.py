"""The operator command's exit statuses, and the exception that picks one."""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "EXIT_DECLINED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_USAGE",
    "Failed",
]

EXIT_OK = 0
EXIT_NOTHING = 1  # take-down: no file matched the URL
EXIT_USAGE = 2  # bad arguments, bad config, unusable storage folder
EXIT_DECLINED = 3  # delete-user: not confirmed
EXIT_FAILED = 4  # a storage or database error during the run
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = f"""\
exit status:
  {EXIT_OK}    done (also: nothing to list, delete or purge)
  {EXIT_NOTHING}    take-down: no file matched the URL
  {EXIT_USAGE}    bad arguments, bad config, or the storage folder cannot be used
  {EXIT_DECLINED}    delete-user: not confirmed
  {EXIT_FAILED}    a storage or database error while running
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

Safe while the service runs on the same storage folder.  Run it as the
service's user, so that what it touches stays the service's."""


class Failed(Exception):
    """Stop with a message on stderr and an exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
