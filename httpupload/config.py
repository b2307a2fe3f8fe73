"""The TOML configuration, read into frozen objects.

Defaults live in the config layer and nowhere else: each is written once, as
the default of its dataclass field (here, in ``config_deploy`` and in
``config_s3``), and ``DEFAULTS``, what a config file leaves out, is read from
those fields; the few a file gets that a bare object does not (the quotas'
bounds) are named there.  Unknown sections and keys are refused (a typo in a
limit must not pass silently); every error names its key.  Parsing works on a
mapping, so tests never need a file.  The layer imports nothing above it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from httpupload.config_deploy import (
    MetadataConfig,
    NodeConfig,
    StorageConfig,
    check_deployment,
    parse_metadata,
    parse_node,
    parse_signing_keys,
    parse_storage,
)
from httpupload.config_reader import (
    Section,
    base_url,
    domain_jid,
    domains,
    field_defaults,
    jids,
    networks,
    reason,
    suggest,
    type_patterns,
)
from httpupload.config_s3 import S3Settings
from httpupload.errors import ConfigError
from httpupload.keys import MIN_SIGNING_KEY_BYTES, KeyRing

__all__ = [
    "BUDGET_FILES",
    "DEFAULTS",
    "KNOWN_KEYS",
    "MIN_SIGNING_KEY_BYTES",
    "AccessConfig",
    "ComponentConfig",
    "Config",
    "ConfigError",
    "HttpConfig",
    "LimitsConfig",
    "MetadataConfig",
    "MetricsConfig",
    "NodeConfig",
    "PurposeConfig",
    "QuotaLimits",
    "QuotasConfig",
    "S3Settings",
    "StorageConfig",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class ComponentConfig:
    jid: str
    # None on a node without the "component" role.
    secret: str | None = field(repr=False)
    server_host: str = "127.0.0.1"
    server_port: int = 5347
    # A dead link is noticed (and reconnected) within this many seconds.
    link_timeout: int = 60


@dataclass(frozen=True)
class HttpConfig:
    public_url: str
    get_url: str
    # None: generate one on first start and keep it in the storage folder.
    signing_keys: KeyRing | None
    # A Twisted endpoint description.
    listen: str = "tcp:5050:interface=127.0.0.1"
    idle_timeout: int = 60
    header_timeout: int = 30
    min_upload_rate: int = 1024
    max_uploads_per_address: int = 16
    trusted_proxies: tuple[str, ...] = ()
    shutdown_grace: int = 30
    # Seconds a broken upload's bytes are kept for it to resume, counted from
    # its last byte (docs/resumable.md).
    partial_lifetime: int = 6 * 3600
    # Who gets the resumable draft's 104 interim response: "direct" (clients
    # not behind a trusted proxy), "always" or "never".
    interim_104: str = "direct"


@dataclass(frozen=True)
class LimitsConfig:
    max_file_size: int = 100 * 1024 * 1024
    # Seconds a slot's PUT URL is valid.
    slot_lifetime: int = 300


@dataclass(frozen=True)
class AccessConfig:
    domains: tuple[str, ...]
    allow_jids: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    deny_jids: tuple[str, ...] = ()
    allow_types: tuple[str, ...] = ("*/*",)
    deny_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuotaLimits:
    """Per-user limits; 0 means no limit."""

    bytes_per_window: int = 0
    files_per_window: int = 0
    total_bytes: int = 0


@dataclass(frozen=True)
class QuotasConfig:
    """The quotas in force.  These field defaults are "no limit", for a bare
    ``SlotPolicy``; a config file gets the bounds of ``FILE_QUOTAS`` (a daily
    byte budget and a bound on unused slots) on top of them."""

    window: int = 86400
    user: QuotaLimits = field(default_factory=QuotaLimits)
    global_bytes: int = 0
    min_free_bytes: int = 0
    # Slots one user holds not yet used (unexpired); 0 means no limit.
    pending_slots: int = 0


@dataclass(frozen=True)
class PurposeConfig:
    enabled: bool
    retention: int  # seconds a file is served; 0: kept forever
    max_file_size: int  # 0: [limits] max_file_size
    limits: QuotaLimits = field(default_factory=QuotaLimits)


PURPOSE_DEFAULTS: dict[str, dict[str, Any]] = {
    "message": {"enabled": True, "retention": 30 * 86400, "max_file_size": 0},
    "profile": {"enabled": True, "retention": 0, "max_file_size": 1024 * 1024},
    "permanent": {"enabled": False, "retention": 0, "max_file_size": 0},
    "ephemeral": {"enabled": True, "retention": 30 * 86400, "max_file_size": 0},
}
PURPOSE_KEYS = (
    "enabled",
    "retention",
    "max_file_size",
    "bytes_per_window",
    "files_per_window",
    "total_bytes",
)


@dataclass(frozen=True)
class MetricsConfig:
    # A Twisted endpoint description; "" turns the metrics listener off.
    listen: str = "tcp:9105:interface=127.0.0.1"


@dataclass(frozen=True)
class Config:
    component: ComponentConfig
    http: HttpConfig
    storage: StorageConfig
    limits: LimitsConfig
    access: AccessConfig
    quotas: QuotasConfig = field(default_factory=QuotasConfig)
    purposes: dict[str, PurposeConfig] = field(default_factory=dict)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    node: NodeConfig = field(default_factory=NodeConfig)


# What a config file gets that a bare ``QuotasConfig`` does not: at most 10
# unused slots per user (bytes_per_window, when not given, is BUDGET_FILES x
# [limits] max_file_size).
FILE_QUOTAS: dict[str, Any] = {"pending_slots": 10}

# What each table holds when the file leaves a key out.
DEFAULTS: dict[str, dict[str, Any]] = {
    "component": field_defaults(ComponentConfig),
    "http": field_defaults(HttpConfig),
    "storage": field_defaults(StorageConfig),
    "metadata": field_defaults(MetadataConfig),
    "node": field_defaults(NodeConfig, computed=("name",)),
    "limits": field_defaults(LimitsConfig),
    "access": field_defaults(AccessConfig),
    "quotas": {
        **field_defaults(QuotasConfig),
        **field_defaults(QuotaLimits, computed=("bytes_per_window",)),
        **FILE_QUOTAS,
    },
    "purposes": {},
    "metrics": field_defaults(MetricsConfig),
}

# The default per-user budget per window, in files of the largest size: as
# Prosody's mod_http_file_share (a daily quota of 10 x its size limit).
BUDGET_FILES = 10

KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "component": (
        "jid",
        "server_host",
        "server_port",
        "secret",
        "secret_file",
        "link_timeout",
    ),
    "http": (
        "listen",
        "public_url",
        "get_url",
        "signing_key",
        "signing_key_file",
        "signing_keys",
        "signing_key_id",
        "idle_timeout",
        "header_timeout",
        "min_upload_rate",
        "max_uploads_per_address",
        "trusted_proxies",
        "shutdown_grace",
        "partial_lifetime",
        "interim_104",
    ),
    "storage": ("backend", "path", "s3"),
    "metadata": ("backend", "dsn", "dsn_file", "threads"),
    "node": ("roles", "name"),
    "limits": ("max_file_size", "slot_lifetime"),
    "access": (
        "domains",
        "allow_jids",
        "deny_domains",
        "deny_jids",
        "allow_types",
        "deny_types",
    ),
    "quotas": (
        "window",
        "bytes_per_window",
        "files_per_window",
        "total_bytes",
        "global_bytes",
        "min_free_bytes",
        "pending_slots",
    ),
    "purposes": tuple(PURPOSE_DEFAULTS),
    "metrics": ("listen",),
}


def _limits(section: Section) -> QuotaLimits:
    return QuotaLimits(
        bytes_per_window=section.positive_int("bytes_per_window", zero_ok=True),
        files_per_window=section.positive_int("files_per_window", zero_ok=True),
        total_bytes=section.positive_int("total_bytes", zero_ok=True),
    )


def _purposes(section: Section) -> dict[str, PurposeConfig]:
    purposes = {}
    for name, defaults in PURPOSE_DEFAULTS.items():
        given = section.values.get(name, {})
        table = f"purposes.{name}"
        limits = {"bytes_per_window": 0, "files_per_window": 0, "total_bytes": 0}
        sub = Section(table, given, PURPOSE_KEYS, {**limits, **defaults})
        purposes[name] = PurposeConfig(
            enabled=sub.boolean("enabled"),
            retention=sub.positive_int("retention", zero_ok=True),
            max_file_size=sub.positive_int("max_file_size", zero_ok=True),
            limits=_limits(sub),
        )
    return purposes


def parse_config(data: Mapping[str, Any], base_dir: Path) -> Config:
    """A checked ``Config`` from parsed TOML; relative paths start at ``base_dir``."""
    for name in data:
        if name not in KNOWN_KEYS:
            raise ConfigError(
                f"[{name}]", "unknown section" + suggest(name, list(KNOWN_KEYS))
            )
    sections = {
        name: Section(name, data.get(name, {}), known, DEFAULTS[name])
        for name, known in KNOWN_KEYS.items()
    }
    node = parse_node(sections["node"])

    c = sections["component"]
    jid = domain_jid(c, "jid")
    if node.runs_component and not (c.has("secret") or c.has("secret_file")):
        raise ConfigError(
            c.key("secret"),
            'missing (give secret or secret_file): the "component" role needs it',
        )
    component = ComponentConfig(
        jid=jid,
        server_host=c.string("server_host") or "",
        server_port=c.positive_int("server_port", maximum=65535),
        secret=c.secret("secret", base_dir, required=False),
        link_timeout=c.positive_int("link_timeout"),
    )

    h = sections["http"]
    public_url = base_url(h, "public_url", h.string("public_url") or "")
    get_url = h.string("get_url", required=False)
    http = HttpConfig(
        listen=h.string("listen") or "",
        public_url=public_url,
        get_url=base_url(h, "get_url", get_url) if get_url else public_url,
        signing_keys=parse_signing_keys(h, base_dir),
        idle_timeout=h.positive_int("idle_timeout"),
        header_timeout=h.positive_int("header_timeout"),
        min_upload_rate=h.positive_int("min_upload_rate", zero_ok=True),
        max_uploads_per_address=h.positive_int("max_uploads_per_address"),
        trusted_proxies=networks(h, "trusted_proxies"),
        shutdown_grace=h.positive_int("shutdown_grace", zero_ok=True),
        partial_lifetime=h.positive_int("partial_lifetime", minimum=3600),
        interim_104=h.choice("interim_104", ("direct", "always", "never")),
    )
    storage = parse_storage(sections["storage"], base_dir)
    metadata = parse_metadata(sections["metadata"], base_dir)
    check_deployment(storage, metadata, node, http.signing_keys)

    lim = sections["limits"]
    limits = LimitsConfig(
        max_file_size=lim.positive_int("max_file_size"),
        slot_lifetime=lim.positive_int("slot_lifetime"),
    )

    a = sections["access"]
    access = AccessConfig(
        domains=domains(a, "domains", jid),
        allow_jids=jids(a, "allow_jids"),
        deny_domains=jids(a, "deny_domains", domains=True),
        deny_jids=jids(a, "deny_jids"),
        allow_types=type_patterns(a, "allow_types"),
        deny_types=type_patterns(a, "deny_types"),
    )
    q = sections["quotas"]
    q.values.setdefault("bytes_per_window", BUDGET_FILES * limits.max_file_size)
    quotas = QuotasConfig(
        window=q.positive_int("window"),
        user=_limits(q),
        global_bytes=q.positive_int("global_bytes", zero_ok=True),
        min_free_bytes=q.positive_int("min_free_bytes", zero_ok=True),
        pending_slots=q.positive_int("pending_slots", zero_ok=True),
    )
    purposes = _purposes(sections["purposes"])
    m = sections["metrics"]
    listen = m.values["listen"]
    if not isinstance(listen, str):
        raise ConfigError(m.key("listen"), 'must be an endpoint description or ""')
    metrics = MetricsConfig(listen=listen.strip())
    return Config(
        component,
        http,
        storage,
        limits,
        access,
        quotas,
        purposes,
        metrics,
        metadata,
        node,
    )


def load_config(path: str | Path) -> Config:
    """Read and check the TOML file at ``path``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {reason(e)}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from None
    return parse_config(data, path.resolve().parent)
