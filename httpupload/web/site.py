"""The twisted.web ``Site`` of the upload service, and its access log.

The access log is the combined log format with every value a client chose
escaped as Apache does (``\\xhh`` for anything but printable ASCII, ``\\"``
and ``\\\\``), so no control character, terminal escape or bidirectional
override reaches a terminal, and cut to a bounded length; the path is never
shown beyond a short prefix of the file id (file URLs, and any ``?token=``,
are capabilities), whatever form the request target took.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from httpupload.metadata import MetadataStore
from httpupload.metadata.cache import RecordCache
from httpupload.metrics import Metrics
from httpupload.slots import parse_url_path
from httpupload.storage import Storage
from httpupload.web.addresses import Network, client_address
from httpupload.web.interfaces import IUploadDesk
from httpupload.web.request import UploadChannel, UploadRequest
from httpupload.web.resource import UploadResource
from httpupload.web.settings import DEFAULT_SETTINGS, WebSettings, settings_of
from httpupload.web.wire import origin_form

# The old names of WebSettings' defaults (which are HttpConfig's).
DEFAULT_IDLE_TIMEOUT = DEFAULT_SETTINGS.idle_timeout
DEFAULT_HEADER_TIMEOUT = DEFAULT_SETTINGS.header_timeout
DEFAULT_MIN_UPLOAD_RATE = DEFAULT_SETTINGS.min_upload_rate

# Client-chosen fields are cut to this many characters before escaping.
MAX_LOGGED_AGENT = 256
MAX_LOGGED_TOKEN = 32

log = Logger()

# Printable ASCII only, and neither quote nor backslash (RFC 9110 tokens and
# user agents are ASCII; anything else is shown as its bytes).
_UNSAFE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in '"\\':
        return "\\" + char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return "".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass"))


def log_safe(value: bytes | str, limit: int) -> str:
    """A client-chosen value fit for a log line, at most ``limit`` characters.

    Each character outside printable ASCII is escaped as ``\\xhh`` (C0, DEL,
    C1, bidi and format characters included); ``"`` and ``\\`` are escaped.
    """
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    cut = text[:limit]
    escaped = _UNSAFE.sub(_escape_char, cut)
    return escaped + "…" if len(text) > limit else escaped


def redacted_path(path: bytes) -> str:
    """A request path fit for logs: file URLs are capabilities, so keep a hint only.

    Absolute-form targets are judged by their path; a query is never shown.
    """
    parsed = parse_url_path(origin_form(path))
    if parsed is None:
        return "/<other>"
    return f"/{parsed[0][:6]}…/<name>"


def access_log_line(timestamp: str, request: Request) -> str:
    """Combined log format, without the secret part of the URL.

    The client is the peer, or what a trusted proxy's X-Forwarded-For says.
    """
    host = client_address(request, settings_of(request).trusted_proxies)
    agent = request.getHeader(b"user-agent") or b"-"
    return '{} - - {} "{} {} {}" {} {} "{}"'.format(
        log_safe(host, MAX_LOGGED_TOKEN * 2),
        timestamp,
        log_safe(request.method or b"-", MAX_LOGGED_TOKEN),
        redacted_path(request.uri or b""),
        log_safe(request.clientproto or b"-", MAX_LOGGED_TOKEN),
        int(request.code),
        int(request.sentLength or 0) or "-",
        log_safe(agent, MAX_LOGGED_AGENT),
    )


class GuardedSite(Site):
    """A ``Site`` with our channel and request, and the escaped access log.

    So that every listener of the service sends no ``Server`` header, keeps
    no request body it does not stream, bounds the request head and its
    time, logs escaped client values and hides file URLs, and closes an idle
    connection after ``idle_timeout`` (a plain ``Site`` waits 12 h).  Each
    channel it builds is handed the site's ``settings`` and ``desk`` (None:
    this site takes no uploads).
    """

    protocol = UploadChannel  # type: ignore[assignment]
    requestFactory = UploadRequest
    desk: IUploadDesk | None = None

    def __init__(
        self,
        resource: Resource,
        reactor: IReactorTime,
        *,
        idle_timeout: float | None = None,
        settings: WebSettings | None = None,
    ) -> None:
        if settings is None:
            settings = WebSettings.build(idle_timeout=idle_timeout)
        self.settings = settings
        super().__init__(
            resource,
            timeout=settings.idle_timeout,
            logFormatter=access_log_line,
            reactor=reactor,
            # Nothing here takes forms, and twisted.web's form parser raises on
            # some Content-Type values (found by tests/test_fuzz.py).
            parsePOSTFormSubmission=False,
        )
        self.displayTracebacks = False
        self.noisy = False

    @property
    def trusted_proxies(self) -> tuple[Network, ...]:
        """The settings' trusted proxies (set: new settings, for new connections)."""
        return self.settings.trusted_proxies

    @trusted_proxies.setter
    def trusted_proxies(self, networks: tuple[Network, ...]) -> None:
        self.settings = replace(self.settings, trusted_proxies=tuple(networks))

    # Twisted declares its private protocol-switching wrapper as the result;
    # with ``protocol`` set, the result is our channel.
    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        channel: Protocol | None = super().buildProtocol(addr)
        if isinstance(channel, UploadChannel):
            channel.settings = self.settings
            channel.desk = self.desk
            channel.clock = self.reactor
        return channel


class UploadSite(GuardedSite):
    """A ``Site`` whose PUT bodies stream into storage and whose logs hide file URLs.

    ``settings`` is the web layer's part of the configuration
    (``WebSettings.from_config(config.http)``).  The loose ``idle_timeout``,
    ``header_timeout``, ``min_upload_rate`` and ``trusted_proxies`` are its
    older form, used only when ``settings`` is not given.
    """

    def __init__(
        self,
        uploads: IUploadDesk,
        storage: Storage,
        reactor: IReactorTime,
        *,
        settings: WebSettings | None = None,
        idle_timeout: float | None = None,
        header_timeout: float | None = None,
        min_upload_rate: int | None = None,
        trusted_proxies: Iterable[str] = (),
        metadata: MetadataStore | None = None,
        metrics: Metrics | None = None,
        records: RecordCache | None = None,
    ) -> None:
        if settings is None:
            settings = WebSettings.build(
                idle_timeout=idle_timeout,
                header_timeout=header_timeout,
                min_upload_rate=min_upload_rate,
                trusted_proxies=trusted_proxies,
            )
        super().__init__(
            UploadResource(
                storage, metadata, reactor, receiver=uploads, records=records
            ),
            reactor,
            settings=settings,
        )
        self.uploads = self.desk = uploads
        self.metrics = metrics

    def log(self, request: HTTPRequest) -> None:
        """Every finished request passes here: count it, then log it.

        Never raises: twisted.web calls this from ``Request.finish`` before
        the request is done, so an exception here would leave it unfinished
        and the connection hanging.
        """
        try:
            if self.metrics is not None:
                self.metrics.http_response(request)
            super().log(request)
        except Exception:
            log.failure("Counting or logging a response failed")


class MetricsSite(GuardedSite):
    """The metrics listener's ``Site``: the upload site's wire rules, no uploads."""


__all__ = [
    "GuardedSite",
    "MetricsSite",
    "UploadSite",
    "WebSettings",
    "access_log_line",
    "log_safe",
    "redacted_path",
]
