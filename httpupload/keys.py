"""The key that signs slots: from the config, or generated once and kept.

Several HTTP nodes that verify each other's slots must share it, so an
operator can give it in the config; otherwise it is created on first start
in the storage folder (mode 0600) and read back on every later start.
Runs at start-up only, before the reactor.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from httpupload.config import MIN_SIGNING_KEY_BYTES
from httpupload.errors import ConfigError

KEY_FILE_NAME = "signing.key"


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
