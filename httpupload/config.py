"""The TOML configuration, read into frozen objects.

Defaults live here and nowhere else; unknown sections and keys are refused
(a typo in a limit must not pass silently); every error names its key.
Parsing works on a mapping, so tests never need a file.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from httpupload.errors import ConfigError

MIN_SIGNING_KEY_BYTES = 32


@dataclass(frozen=True)
class ComponentConfig:
    jid: str
    server_host: str
    server_port: int
    secret: str = field(repr=False)
    # A dead link is noticed (and reconnected) within this many seconds.
    link_timeout: int = 60


@dataclass(frozen=True)
class HttpConfig:
    listen: str
    public_url: str
    get_url: str
    # None: generate one on first start and keep it in the storage folder.
    signing_key: bytes | None = field(repr=False)
    idle_timeout: int = 60
    header_timeout: int = 30
    min_upload_rate: int = 1024
    max_uploads_per_address: int = 16
    trusted_proxies: tuple[str, ...] = ()
    shutdown_grace: int = 30


@dataclass(frozen=True)
class StorageConfig:
    path: Path


@dataclass(frozen=True)
class LimitsConfig:
    max_file_size: int
    slot_lifetime: int


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
    window: int = 86400
    user: QuotaLimits = field(default_factory=QuotaLimits)
    global_bytes: int = 0
    min_free_bytes: int = 0


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


DEFAULTS: dict[str, dict[str, Any]] = {
    "component": {"server_host": "127.0.0.1", "server_port": 5347, "link_timeout": 60},
    "http": {
        "listen": "tcp:5050:interface=127.0.0.1",
        "idle_timeout": 60,
        "header_timeout": 30,
        "min_upload_rate": 1024,
        "max_uploads_per_address": 16,
        "trusted_proxies": [],
        "shutdown_grace": 30,
    },
    "storage": {},
    "limits": {"max_file_size": 100 * 1024 * 1024, "slot_lifetime": 300},
    "access": {
        "allow_jids": [],
        "deny_domains": [],
        "deny_jids": [],
        "allow_types": ["*/*"],
        "deny_types": [],
    },
    "quotas": {
        "window": 86400,
        "bytes_per_window": 0,
        "files_per_window": 0,
        "total_bytes": 0,
        "global_bytes": 0,
        "min_free_bytes": 0,
    },
    "purposes": {},
    "metrics": {"listen": "tcp:9105:interface=127.0.0.1"},
}

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
        "idle_timeout",
        "header_timeout",
        "min_upload_rate",
        "max_uploads_per_address",
        "trusted_proxies",
        "shutdown_grace",
    ),
    "storage": ("path",),
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
    ),
    "purposes": tuple(PURPOSE_DEFAULTS),
    "metrics": ("listen",),
}


def _suggest(name: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Section:
    """One ``[table]``: typed getters that name ``[table] key`` in errors."""

    def __init__(self, name: str, values: Any) -> None:
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}]", "must be a table")
        known = KNOWN_KEYS[name]
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"[{name}] {key}", "unknown key" + _suggest(key, known)
                )
        self.name = name
        self.values = {**DEFAULTS[name], **values}

    def key(self, key: str) -> str:
        return f"[{self.name}] {key}"

    def has(self, key: str) -> bool:
        return key in self.values

    def string(self, key: str, *, required: bool = True) -> str | None:
        if key not in self.values:
            if required:
                raise ConfigError(self.key(key), "missing")
            return None
        value = self.values[key]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(self.key(key), "must be a non-empty string")
        return value.strip()

    def positive_int(
        self, key: str, *, maximum: int | None = None, zero_ok: bool = False
    ) -> int:
        if key not in self.values:
            raise ConfigError(self.key(key), "missing")
        value = self.values[key]
        lowest = 0 if zero_ok else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            kind = "a non-negative" if zero_ok else "a positive"
            raise ConfigError(self.key(key), f"must be {kind} integer, got {value!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.key(key), f"must be at most {maximum}, got {value}")
        return value

    def secret(self, key: str, base_dir: Path, *, required: bool) -> str | None:
        """A secret given inline as ``key`` or in a file as ``key_file``."""
        file_key = f"{key}_file"
        if self.has(key) and self.has(file_key):
            raise ConfigError(self.key(key), f"give either {key} or {file_key}")
        if self.has(file_key):
            path = _resolve(base_dir, self.string(file_key) or "")
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    self.key(file_key), f"cannot read {path}: {_reason(e)}"
                ) from None
            if not text:
                raise ConfigError(self.key(file_key), f"{path} is empty")
            return text
        if self.has(key):
            value = self.values[key]
            if not isinstance(value, str) or not value:
                raise ConfigError(self.key(key), "must be a non-empty string")
            return value
        if required:
            raise ConfigError(self.key(key), f"missing (give {key} or {file_key})")
        return None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _domain_jid(section: _Section, key: str) -> str:
    value = section.string(key) or ""
    try:
        parsed = JID(value)
    except InvalidFormat as e:
        raise ConfigError(section.key(key), f"not a valid JID: {e}") from None
    if parsed.user or parsed.resource:
        raise ConfigError(
            section.key(key),
            f"must be a bare domain like upload.example.org, got {value!r}",
        )
    return parsed.host


def _base_url(section: _Section, key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            section.key(key), f"must be an absolute http(s) URL, got {value!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(section.key(key), "must not have a query or fragment")
    return value if value.endswith("/") else value + "/"


def _domains(section: _Section, key: str, component_jid: str) -> tuple[str, ...]:
    if not section.has(key):
        parent = component_jid.partition(".")[2]
        if not parent:
            raise ConfigError(
                section.key(key),
                f"missing, and [component] jid {component_jid!r} has no parent domain",
            )
        return (parent,)
    value = section.values[key]
    if not isinstance(value, list) or not value:
        raise ConfigError(section.key(key), "must be a non-empty list of domains")
    domains = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(section.key(key), f"not a domain: {item!r}")
        try:
            domains.append(JID(item.strip()).host)
        except InvalidFormat as e:
            raise ConfigError(
                section.key(key), f"not a domain: {item!r} ({e})"
            ) from None
    return tuple(domains)


def _networks(section: _Section, key: str) -> tuple[str, ...]:
    value = section.values[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(section.key(key), "must be a list of addresses or networks")
    for item in value:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                section.key(key), f"not an address or network: {item!r}"
            ) from None
    return tuple(v.strip() for v in value)


def _jids(section: _Section, key: str, *, domains: bool = False) -> tuple[str, ...]:
    value = section.values[key]
    if not isinstance(value, list):
        raise ConfigError(section.key(key), "must be a list")
    found = []
    for item in value:
        try:
            parsed = (
                JID(item.strip()) if isinstance(item, str) and item.strip() else None
            )
        except InvalidFormat:
            parsed = None
        if parsed is None or parsed.resource or (domains and parsed.user):
            kind = "a domain" if domains else "a bare JID"
            raise ConfigError(section.key(key), f"not {kind}: {item!r}")
        found.append(parsed.userhost())
    return tuple(found)


_TYPE_PATTERN = re.compile(r"(\*|[!#$%&'+.^_`|~0-9a-z-]+)/(\*|[!#$%&'+.^_`|~0-9a-z-]+)")


def _type_patterns(section: _Section, key: str) -> tuple[str, ...]:
    value = section.values[key]
    if not isinstance(value, list):
        raise ConfigError(section.key(key), "must be a list of media types")
    patterns = []
    for item in value:
        text = item.strip().lower() if isinstance(item, str) else ""
        wild_type = text.startswith("*/") and text != "*/*"
        if not _TYPE_PATTERN.fullmatch(text) or wild_type:
            raise ConfigError(
                section.key(key), f"not a media type or pattern like image/*: {item!r}"
            )
        patterns.append(text)
    return tuple(patterns)


def _limits(section: _Section) -> QuotaLimits:
    return QuotaLimits(
        bytes_per_window=section.positive_int("bytes_per_window", zero_ok=True),
        files_per_window=section.positive_int("files_per_window", zero_ok=True),
        total_bytes=section.positive_int("total_bytes", zero_ok=True),
    )


def _purposes(section: _Section) -> dict[str, PurposeConfig]:
    purposes = {}
    for name, defaults in PURPOSE_DEFAULTS.items():
        given = section.values.get(name, {})
        table = f"purposes.{name}"
        if not isinstance(given, Mapping):
            raise ConfigError(f"[{table}]", "must be a table")
        for key in given:
            if key not in PURPOSE_KEYS:
                raise ConfigError(
                    f"[{table}] {key}", "unknown key" + _suggest(key, PURPOSE_KEYS)
                )
        sub = _Section.__new__(_Section)
        sub.name = table
        sub.values = {
            "bytes_per_window": 0,
            "files_per_window": 0,
            "total_bytes": 0,
            **defaults,
            **given,
        }
        enabled = sub.values["enabled"]
        if not isinstance(enabled, bool):
            raise ConfigError(sub.key("enabled"), "must be true or false")
        purposes[name] = PurposeConfig(
            enabled=enabled,
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
                f"[{name}]", "unknown section" + _suggest(name, list(KNOWN_KEYS))
            )
    sections = {name: _Section(name, data.get(name, {})) for name in KNOWN_KEYS}

    c = sections["component"]
    jid = _domain_jid(c, "jid")
    component = ComponentConfig(
        jid=jid,
        server_host=c.string("server_host") or "",
        server_port=c.positive_int("server_port", maximum=65535),
        secret=c.secret("secret", base_dir, required=True) or "",
        link_timeout=c.positive_int("link_timeout"),
    )

    h = sections["http"]
    public_url = _base_url(h, "public_url", h.string("public_url") or "")
    get_url = h.string("get_url", required=False)
    key = h.secret("signing_key", base_dir, required=False)
    signing_key = key.encode("utf-8") if key is not None else None
    if signing_key is not None and len(signing_key) < MIN_SIGNING_KEY_BYTES:
        which = "signing_key_file" if h.has("signing_key_file") else "signing_key"
        raise ConfigError(
            h.key(which), f"must be at least {MIN_SIGNING_KEY_BYTES} bytes long"
        )
    http = HttpConfig(
        listen=h.string("listen") or "",
        public_url=public_url,
        get_url=_base_url(h, "get_url", get_url) if get_url else public_url,
        signing_key=signing_key,
        idle_timeout=h.positive_int("idle_timeout"),
        header_timeout=h.positive_int("header_timeout"),
        min_upload_rate=h.positive_int("min_upload_rate", zero_ok=True),
        max_uploads_per_address=h.positive_int("max_uploads_per_address"),
        trusted_proxies=_networks(h, "trusted_proxies"),
        shutdown_grace=h.positive_int("shutdown_grace", zero_ok=True),
    )

    s = sections["storage"]
    storage = StorageConfig(path=_resolve(base_dir, s.string("path") or ""))

    lim = sections["limits"]
    limits = LimitsConfig(
        max_file_size=lim.positive_int("max_file_size"),
        slot_lifetime=lim.positive_int("slot_lifetime"),
    )

    a = sections["access"]
    access = AccessConfig(
        domains=_domains(a, "domains", jid),
        allow_jids=_jids(a, "allow_jids"),
        deny_domains=_jids(a, "deny_domains", domains=True),
        deny_jids=_jids(a, "deny_jids"),
        allow_types=_type_patterns(a, "allow_types"),
        deny_types=_type_patterns(a, "deny_types"),
    )
    q = sections["quotas"]
    quotas = QuotasConfig(
        window=q.positive_int("window"),
        user=_limits(q),
        global_bytes=q.positive_int("global_bytes", zero_ok=True),
        min_free_bytes=q.positive_int("min_free_bytes", zero_ok=True),
    )
    purposes = _purposes(sections["purposes"])
    m = sections["metrics"]
    listen = m.values["listen"]
    if not isinstance(listen, str):
        raise ConfigError(m.key("listen"), 'must be an endpoint description or ""')
    metrics = MetricsConfig(listen=listen.strip())
    return Config(component, http, storage, limits, access, quotas, purposes, metrics)


def load_config(path: str | Path) -> Config:
    """Read and check the TOML file at ``path``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("--config", f"cannot read {path}: {_reason(e)}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from None
    return parse_config(data, path.resolve().parent)
