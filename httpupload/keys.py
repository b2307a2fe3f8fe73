"""The keys that sign slots: a keyring with ids, and the generated default key.

A token names the id of the key that signed it, so an operator can add a new
key, make it the one that signs, and retire the old one later, without
refusing the slots already handed out under it.  Several nodes that check
each other's slots must share the ring, so it can come from the config;
a single node without one gets a key generated on first start in its storage
folder (mode 0600) and read back on every later start (start-up only, before
the reactor runs); a kept key found readable by others (copied in by hand, or
restored from a backup) is narrowed to 0600 before it signs anything, since
whoever reads it can mint slots.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from twisted.logger import Logger

from httpupload.errors import ConfigError

log = Logger()

KEY_FILE_NAME = "signing.key"
# What the config asks of every key; the ring itself only refuses keys too
# short for HMAC-SHA256 to mean anything (tests use short ones).
MIN_SIGNING_KEY_BYTES = 32
_MIN_HMAC_KEY_BYTES = 16
# The id of a key given alone ([http] signing_key or the generated one), and
# the key that checks v1 tokens, which carry no id (minted before key ids).
LEGACY_KEY_ID = "default"
KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyRing:
    """The key that signs new slots, and every key whose slots are still taken.

    Immutable.  ``current_id`` names the signing key; ``ids`` lists every key
    a token may name.  A token naming an id not in the ring (a retired key)
    is refused.  The keys never appear in ``repr``.
    """

    __slots__ = ("_current_id", "_keys")

    def __init__(self, current_id: str, keys: Mapping[str, bytes]) -> None:
        for key_id, key in keys.items():
            if not KEY_ID_RE.fullmatch(key_id):
                raise ValueError(f"bad key id {key_id!r}: use 1-32 of A-Za-z0-9_-")
            if not isinstance(key, bytes) or len(key) < _MIN_HMAC_KEY_BYTES:
                raise ValueError(f"signing key {key_id!r} too short")
        if current_id not in keys:
            raise ValueError(f"no key with the current id {current_id!r}")
        self._current_id = current_id
        self._keys: Mapping[str, bytes] = MappingProxyType(dict(keys))

    @classmethod
    def single(cls, key: bytes, key_id: str = LEGACY_KEY_ID) -> KeyRing:
        """A ring of one key, which signs and which checks v1 tokens too."""
        return cls(key_id, {key_id: key})

    @property
    def current_id(self) -> str:
        """The id new tokens carry."""
        return self._current_id

    @property
    def current_key(self) -> bytes:
        """The key that signs new tokens."""
        return self._keys[self._current_id]

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id whose tokens are still accepted, sorted."""
        return tuple(sorted(self._keys))

    def get(self, key_id: str) -> bytes | None:
        """The key with ``key_id``, or None if it is unknown or retired."""
        return self._keys.get(key_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyRing):
            return NotImplemented
        return self._current_id == other._current_id and dict(self._keys) == dict(
            other._keys
        )

    def __hash__(self) -> int:
        return hash((self._current_id, tuple(sorted(self._keys.items()))))

    def __repr__(self) -> str:
        return f"KeyRing(current_id={self._current_id!r}, ids={self.ids!r})"


def load_or_create_signing_key(folder: Path) -> bytes:
    """The key kept in ``folder``, made (atomically, owner-only) if absent."""
    path = folder / KEY_FILE_NAME
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        key = None
    except OSError as e:
        raise ConfigError(
            "[storage] path", f"cannot read {path}: {e.strerror}"
        ) from None
    if key is not None:
        _keep_private(path)
        if len(key) < MIN_SIGNING_KEY_BYTES:
            raise ConfigError(
                "[storage] path",
                f"{path} holds a key shorter than {MIN_SIGNING_KEY_BYTES} bytes",
            )
        return key
    key = secrets.token_hex(32).encode("ascii")
    tmp = folder / f".{KEY_FILE_NAME}.{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            # link, not rename: if another node made one meanwhile, keep theirs.
            os.link(tmp, path)
        except FileExistsError:
            return load_or_create_signing_key(folder)
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise ConfigError(
            "[storage] path", f"cannot write {path}: {e.strerror}"
        ) from None
    return key


def _keep_private(path: Path) -> None:
    """Take group and other access from a kept key; refuse if that fails."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            log.warn(
                "{path} was readable by other users (mode {mode:o}); made it "
                "owner-only. Anyone who read it could sign slots: replace it "
                "if in doubt",
                path=path,
                mode=mode,
            )
    except OSError as e:
        raise ConfigError(
            "[storage] path", f"cannot make {path} owner-only: {e.strerror}"
        ) from None
