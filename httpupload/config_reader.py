"""Reading one TOML table: typed getters whose every error names its key.

Kept apart from what the keys mean (``config``, ``config_deploy``): this
module knows tables, strings, integers, secrets, URLs, JIDs and networks,
and how to say ``[table] key: problem`` in one line, with a "did you mean"
for a mistyped key; and how a config dataclass's field defaults read as a
table's defaults (``field_defaults``).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from httpupload.errors import ConfigError


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reason(error: Exception) -> str:
    """An OSError's text without its errno and path noise."""
    return getattr(error, "strerror", None) or str(error)


def resolve(base_dir: Path, value: str) -> Path:
    """``value`` as a path, relative ones taken from ``base_dir``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def field_defaults(cls: type[Any], *, computed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The defaults of a config dataclass's fields, as TOML would spell them.

    Fields without a default, defaulting to None or to a nested table, or
    ``computed`` when the file leaves them out, are left out (a missing key
    then means "absent", is worked out, or is an error).
    """
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in computed:
            continue
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            continue
        if value is None or is_dataclass(value) or isinstance(value, dict):
            continue
        values[f.name] = list(value) if isinstance(value, tuple) else value
    return values


class Section:
    """One table: unknown keys refused, defaults filled in, typed getters.

    ``title`` is how errors name the table (``[http]``, or
    ``[[http.signing_keys]] #2`` for an element of an array of tables).
    """

    def __init__(
        self,
        name: str,
        values: Any,
        known: Iterable[str],
        defaults: Mapping[str, Any] | None = None,
        *,
        title: str | None = None,
    ) -> None:
        self.name = name
        self.title = title or f"[{name}]"
        if not isinstance(values, Mapping):
            raise ConfigError(self.title, "must be a table")
        known = tuple(known)
        for key in values:
            if key not in known:
                raise ConfigError(self.key(key), "unknown key" + suggest(key, known))
        self.given = frozenset(values)
        self.values = {**(defaults or {}), **values}

    def key(self, key: str) -> str:
        return f"{self.title} {key}"

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

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        """One of ``choices`` (the first is the default if none is given)."""
        value = self.values.get(key, choices[0])
        if value not in choices:
            options = " or ".join(f'"{c}"' for c in choices)
            hint = suggest(value, choices) if isinstance(value, str) else ""
            raise ConfigError(self.key(key), f"must be {options}, got {value!r}{hint}")
        return str(value)

    def boolean(self, key: str) -> bool:
        value = self.values.get(key)
        if not isinstance(value, bool):
            raise ConfigError(self.key(key), "must be true or false")
        return value

    def positive_int(
        self,
        key: str,
        *,
        maximum: int | None = None,
        minimum: int | None = None,
        zero_ok: bool = False,
    ) -> int:
        if key not in self.values:
            raise ConfigError(self.key(key), "missing")
        value = self.values[key]
        lowest = 0 if zero_ok else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            kind = "a non-negative" if zero_ok else "a positive"
            raise ConfigError(self.key(key), f"must be {kind} integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(self.key(key), f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(self.key(key), f"must be at most {maximum}, got {value}")
        return value

    def secret(self, key: str, base_dir: Path, *, required: bool) -> str | None:
        """A secret given inline as ``key`` or in a file as ``key_file``."""
        file_key = f"{key}_file"
        if self.has(key) and self.has(file_key):
            raise ConfigError(self.key(key), f"give either {key} or {file_key}")
        if self.has(file_key):
            path = resolve(base_dir, self.string(file_key) or "")
            try:
                text = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    self.key(file_key), f"cannot read {path}: {reason(e)}"
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

    def sub_tables(self, key: str) -> list[Any]:
        """The raw elements of an array of tables (``[[name.key]]``); [] if none."""
        value = self.values.get(key, [])
        if not isinstance(value, list):
            raise ConfigError(
                self.key(key), f"must be an array of tables ([[{self.name}.{key}]])"
            )
        return value


def base_url(section: Section, key: str, value: str) -> str:
    """An absolute http(s) URL without query or fragment, ending in ``/``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            section.key(key), f"must be an absolute http(s) URL, got {value!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(section.key(key), "must not have a query or fragment")
    return value if value.endswith("/") else value + "/"


def domain_jid(section: Section, key: str) -> str:
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


def domains(section: Section, key: str, component_jid: str) -> tuple[str, ...]:
    """A list of domains; by default the parent domain of ``component_jid``."""
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
    found = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(section.key(key), f"not a domain: {item!r}")
        try:
            found.append(JID(item.strip()).host)
        except InvalidFormat as e:
            raise ConfigError(
                section.key(key), f"not a domain: {item!r} ({e})"
            ) from None
    return tuple(found)


def networks(section: Section, key: str) -> tuple[str, ...]:
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


def jids(section: Section, key: str, *, domains: bool = False) -> tuple[str, ...]:
    """A list of bare JIDs (or, with ``domains``, of bare domains)."""
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


def type_patterns(section: Section, key: str) -> tuple[str, ...]:
    """Media types or patterns like ``image/*`` (``*/*`` alone for the type)."""
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
