"""A root-run operator command works as the storage folder's owner.

``sudo httpupload-admin …`` opens the service's SQLite database; anything it
created as root (a ``-wal`` or ``-shm`` file, with an SQLite built without
its own chown for root) would lock the service, which runs as its own user,
out of its database.  So before any store is opened a command run as root
switches to the user owning the storage folder (its groups, then its group,
then its user: there is no way back), and refuses with one line if it cannot.
Commands run as any other user are left alone: the folder's modes (0700)
already keep them out.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from httpupload.config import Config
from httpupload.errors import ConfigError

ROOT_UID = 0


@dataclass(frozen=True)
class Identity:
    """A user to become: the storage folder's owner."""

    uid: int
    gid: int
    name: str | None  # None: the uid has no passwd entry

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid})" if self.name else f"uid {self.uid}"


class SwitchCalls(Protocol):
    """The calls that change a process's user (``os``; a fake in tests)."""

    def initgroups(self, username: str, gid: int, /) -> None: ...
    def setgroups(self, groups: list[int], /) -> None: ...
    def setgid(self, gid: int, /) -> None: ...
    def setuid(self, uid: int, /) -> None: ...
    def geteuid(self) -> int: ...


def storage_owner(
    folder: Path,
    euid: int,
    stat: Callable[[Path], os.stat_result] = os.stat,
    lookup: Callable[[int], pwd.struct_passwd] = pwd.getpwuid,
) -> Identity | None:
    """Whom a command running as ``euid`` should become, or None to stay.

    Only root switches, and only to another owner: a folder owned by root
    (or not there yet: the command then refuses it by itself) keeps root.
    """
    if euid != ROOT_UID:
        return None
    try:
        found = stat(folder)
    except FileNotFoundError:
        return None
    if found.st_uid == ROOT_UID:
        return None
    try:
        entry = lookup(found.st_uid)
    except KeyError:
        return Identity(found.st_uid, found.st_gid, None)
    return Identity(found.st_uid, entry.pw_gid, entry.pw_name)


def become(who: Identity, calls: SwitchCalls = os) -> None:
    """Drop root for ``who``, for good; raises OSError if any step fails."""
    if who.name is not None:
        calls.initgroups(who.name, who.gid)
    else:
        calls.setgroups([who.gid])
    calls.setgid(who.gid)
    calls.setuid(who.uid)
    if calls.geteuid() != who.uid:
        raise PermissionError(1, "the user did not change")


def run_as_storage_owner(
    config: Config,
    euid: int | None = None,
    calls: SwitchCalls = os,
) -> Identity | None:
    """Before any store is opened: as root, become the storage folder's owner.

    Returns whom the process became (None: it stayed as it was); raises
    ``ConfigError`` with one line when it cannot switch.
    """
    folder = config.storage.path
    if folder is None:  # S3 and PostgreSQL: no local files to own
        return None
    who = storage_owner(folder, os.geteuid() if euid is None else euid)
    if who is None:
        return None
    try:
        become(who, calls)
    except OSError as e:
        raise ConfigError(
            "[storage] path",
            f"{folder} belongs to {who}; running as root, could not switch to "
            f"that user ({e.strerror}): run the command as {who.name or who.uid}",
        ) from None
    return who


__all__ = ["Identity", "become", "run_as_storage_owner", "storage_owner"]
