"""The settings of the web layer, as one typed object built from ``[http]``.

The channel, the request and each PUT read their numbers here, handed down
by the site when it builds a connection, rather than probing the ``Site``
for attributes.  Its defaults are ``HttpConfig``'s (config.py keeps every
default), so a site built without a config behaves as a default one does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from twisted.web.server import Request

from httpupload.config import HttpConfig
from httpupload.web.addresses import Network, parse_networks
from httpupload.web.interfaces import IStreamingRequest


def config_default(name: str) -> Any:
    """The default ``HttpConfig`` gives ``name`` (config.py keeps every default)."""
    for f in fields(HttpConfig):
        if f.name == name and f.default is not MISSING:
            return f.default
    raise LookupError(f"HttpConfig has no default for {name}")


@dataclass(frozen=True)
class WebSettings:
    """What the HTTP side needs of the configuration.

    ``idle_timeout``: seconds a connection may send nothing (also the window
    over which ``min_upload_rate`` is averaged); ``header_timeout``: seconds
    a request head may take; ``min_upload_rate``: bytes per second an upload
    body must average (0: no floor); ``trusted_proxies``: networks whose
    ``X-Forwarded-For`` names the client.
    """

    idle_timeout: float = config_default("idle_timeout")
    header_timeout: float = config_default("header_timeout")
    min_upload_rate: int = config_default("min_upload_rate")
    trusted_proxies: tuple[Network, ...] = ()
    # Resumable uploads (docs/resumable.md): how long a broken upload is
    # kept, and who gets the draft's 104 interim response.
    partial_lifetime: int = config_default("partial_lifetime")
    interim_104: str = config_default("interim_104")

    @classmethod
    def from_config(cls, http: HttpConfig) -> WebSettings:
        """The settings of an ``[http]`` section."""
        return cls.build(
            idle_timeout=http.idle_timeout,
            header_timeout=http.header_timeout,
            min_upload_rate=http.min_upload_rate,
            trusted_proxies=http.trusted_proxies,
            partial_lifetime=http.partial_lifetime,
            interim_104=http.interim_104,
        )

    @classmethod
    def build(
        cls,
        *,
        idle_timeout: float | None = None,
        header_timeout: float | None = None,
        min_upload_rate: int | None = None,
        trusted_proxies: Iterable[str] = (),
        partial_lifetime: int | None = None,
        interim_104: str | None = None,
    ) -> WebSettings:
        """Settings from loose values (None: the default); proxies as text."""
        default = cls()
        return cls(
            idle_timeout=default.idle_timeout if idle_timeout is None else idle_timeout,
            header_timeout=(
                default.header_timeout if header_timeout is None else header_timeout
            ),
            min_upload_rate=(
                default.min_upload_rate if min_upload_rate is None else min_upload_rate
            ),
            trusted_proxies=parse_networks(trusted_proxies),
            partial_lifetime=(
                default.partial_lifetime
                if partial_lifetime is None
                else partial_lifetime
            ),
            interim_104=default.interim_104 if interim_104 is None else interim_104,
        )


DEFAULT_SETTINGS = WebSettings()


def settings_of(request: Request) -> WebSettings:
    """The settings a request arrived under (the defaults on a foreign Site)."""
    streaming = IStreamingRequest(request, None)
    return DEFAULT_SETTINGS if streaming is None else streaming.web_settings()


__all__ = ["DEFAULT_SETTINGS", "WebSettings", "config_default", "settings_of"]
