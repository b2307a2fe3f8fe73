"""The scale-out part of the config: where things live and who runs what.

``[storage]`` (filesystem or S3), ``[metadata]`` (SQLite or PostgreSQL),
``[node]`` (which roles this process runs) and the signing keys, and the
checks across them: with S3, PostgreSQL or split roles there is no local
folder shared by every node, so the metadata must be in PostgreSQL and the
signing keys must come from the config.  Defaults are in ``config.DEFAULTS``
(S3's in ``config_s3.S3Settings``); every error is one line naming its key.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from httpupload.config_reader import Section, resolve, suggest
from httpupload.config_s3 import S3Settings, parse_s3
from httpupload.errors import ConfigError
from httpupload.keys import (
    KEY_ID_RE,
    LEGACY_KEY_ID,
    MIN_SIGNING_KEY_BYTES,
    KeyRing,
)

StorageBackend = Literal["filesystem", "s3"]
MetadataBackend = Literal["sqlite", "postgresql"]
STORAGE_BACKENDS: tuple[StorageBackend, ...] = ("filesystem", "s3")
METADATA_BACKENDS: tuple[MetadataBackend, ...] = ("sqlite", "postgresql")
# "component": the XMPP component and its slot minting; "http": PUT and GET.
ROLES = ("component", "http")

SIGNING_KEY_KEYS = ("id", "key", "key_file")
MAX_METADATA_THREADS = 64
_NODE_NAME_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True)
class StorageConfig:
    # The folder of the filesystem backend (files, and metadata.sqlite with
    # the sqlite store); None with S3.
    path: Path | None
    backend: StorageBackend = "filesystem"
    s3: S3Settings | None = None


@dataclass(frozen=True)
class MetadataConfig:
    # sqlite: metadata.sqlite in [storage] path, one process owns it.
    backend: MetadataBackend = "sqlite"
    # postgresql: a libpq connection string or URI; holds a password.
    dsn: str | None = field(default=None, repr=False)
    threads: int = 4


@dataclass(frozen=True)
class NodeConfig:
    roles: tuple[str, ...] = ROLES
    # For logs and metrics; the host name by default.
    name: str = ""

    @property
    def runs_component(self) -> bool:
        """Whether this node runs the XMPP component (and mints slots)."""
        return "component" in self.roles

    @property
    def runs_http(self) -> bool:
        """Whether this node serves PUT and GET."""
        return "http" in self.roles


def parse_storage(s: Section, base_dir: Path) -> StorageConfig:
    backend = cast(StorageBackend, s.choice("backend", STORAGE_BACKENDS))
    if backend == "filesystem":
        if "s3" in s.given:
            raise ConfigError(
                "[storage.s3]", 'given, but [storage] backend is "filesystem"'
            )
        if not s.has("path"):
            raise ConfigError(
                s.key("path"), 'missing (the "filesystem" backend keeps files there)'
            )
        return StorageConfig(path=resolve(base_dir, s.string("path") or ""))
    if s.has("path"):
        raise ConfigError(s.key("path"), 'not used by the "s3" backend; remove it')
    if "s3" not in s.given:
        raise ConfigError("[storage.s3]", 'missing: backend "s3" needs its bucket')
    return StorageConfig(path=None, backend="s3", s3=parse_s3(s.values["s3"], base_dir))


def parse_metadata(m: Section, base_dir: Path) -> MetadataConfig:
    backend = cast(MetadataBackend, m.choice("backend", METADATA_BACKENDS))
    if backend == "sqlite":
        for key in ("dsn", "dsn_file", "threads"):
            if key in m.given:
                raise ConfigError(
                    m.key(key), 'only used by the "postgresql" backend; remove it'
                )
        return MetadataConfig()
    if not (m.has("dsn") or m.has("dsn_file")):
        raise ConfigError(
            m.key("dsn"), 'missing (give dsn or dsn_file): the "postgresql" backend'
        )
    return MetadataConfig(
        backend="postgresql",
        dsn=m.secret("dsn", base_dir, required=True),
        threads=m.positive_int("threads", maximum=MAX_METADATA_THREADS),
    )


def parse_node(n: Section) -> NodeConfig:
    roles = n.values["roles"]
    if not isinstance(roles, list) or not roles:
        raise ConfigError(
            n.key("roles"), 'must be a non-empty list of "component", "http"'
        )
    for role in roles:
        if role not in ROLES:
            hint = suggest(role, ROLES) if isinstance(role, str) else ""
            raise ConfigError(
                n.key("roles"),
                f'unknown role {role!r}{hint}: use "component" and/or "http"',
            )
    if len(set(roles)) != len(roles):
        raise ConfigError(n.key("roles"), "a role is listed twice")
    if n.has("name"):
        name = n.string("name") or ""
        if not _NODE_NAME_RE.fullmatch(name):
            raise ConfigError(
                n.key("name"), f"use 1-64 of A-Za-z0-9 . _ : -, got {name!r}"
            )
    else:
        name = socket.gethostname() or "localhost"
    return NodeConfig(roles=tuple(r for r in ROLES if r in roles), name=name)


def _key_bytes(section: Section, name: str, base_dir: Path) -> bytes:
    text = section.secret(name, base_dir, required=True) or ""
    key = text.encode("utf-8")
    if len(key) < MIN_SIGNING_KEY_BYTES:
        which = f"{name}_file" if section.has(f"{name}_file") else name
        raise ConfigError(
            section.key(which), f"must be at least {MIN_SIGNING_KEY_BYTES} bytes long"
        )
    return key


def parse_signing_keys(h: Section, base_dir: Path) -> KeyRing | None:
    """The ring from ``signing_key`` (id "default") and ``[[http.signing_keys]]``.

    None if no key is given (a single node then generates one).
    """
    keys: dict[str, bytes] = {}
    if h.has("signing_key") or h.has("signing_key_file"):
        keys[LEGACY_KEY_ID] = _key_bytes(h, "signing_key", base_dir)
    for i, raw in enumerate(h.sub_tables("signing_keys"), start=1):
        title = f"[[http.signing_keys]] #{i}"
        s = Section("http.signing_keys", raw, SIGNING_KEY_KEYS, title=title)
        if not s.has("id"):
            raise ConfigError(s.key("id"), "missing")
        key_id = s.values["id"]
        if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
            raise ConfigError(s.key("id"), f"use 1-32 of A-Za-z0-9 _ -, got {key_id!r}")
        if key_id in keys:
            also = " (the id of [http] signing_key)" if key_id == LEGACY_KEY_ID else ""
            raise ConfigError(s.key("id"), f"{key_id!r} is given twice{also}")
        keys[key_id] = _key_bytes(s, "key", base_dir)
    known = ", ".join(sorted(keys)) or "none"
    if h.has("signing_key_id"):
        current = h.string("signing_key_id") or ""
        if current not in keys:
            raise ConfigError(
                h.key("signing_key_id"), f"no key has id {current!r} (given: {known})"
            )
    elif len(keys) > 1:
        raise ConfigError(
            h.key("signing_key_id"),
            f"missing: several signing keys ({known}); name the one that signs",
        )
    elif keys:
        current = next(iter(keys))
    else:
        return None
    return KeyRing(current, keys)


def check_deployment(
    storage: StorageConfig,
    metadata: MetadataConfig,
    node: NodeConfig,
    signing_keys: KeyRing | None,
) -> None:
    """Refuse what cannot work without one local folder shared by all nodes."""
    split = node.roles != ROLES
    if metadata.backend != "postgresql":
        if storage.backend == "s3":
            raise ConfigError(
                "[metadata] backend",
                'must be "postgresql" with [storage] backend "s3" '
                "(there is no local folder for metadata.sqlite)",
            )
        if split:
            raise ConfigError(
                "[metadata] backend",
                'must be "postgresql" when [node] roles is not both "component" '
                'and "http" (the nodes share one metadata store)',
            )
    if signing_keys is None:
        if storage.backend == "s3":
            why = '[storage] backend is "s3"'
        elif metadata.backend == "postgresql":
            why = '[metadata] backend is "postgresql"'
        elif split:
            why = f"[node] roles is {list(node.roles)}"
        else:
            return
        raise ConfigError(
            "[http] signing_key",
            f"missing: {why}, so there is no shared local folder to keep a "
            "generated key; give signing_key, signing_key_file or "
            "[[http.signing_keys]]",
        )
