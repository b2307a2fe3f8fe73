"""The twisted.web ``Site`` of the upload service."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import Request as HTTPRequest
from twisted.web.server import Request, Site

from httpupload.metadata import MetadataStore
from httpupload.metrics import Metrics
from httpupload.slots import parse_url_path
from httpupload.storage import Storage
from httpupload.web.addresses import client_address, parse_networks
from httpupload.web.request import UploadChannel, UploadRequest
from httpupload.web.resource import UploadResource
from httpupload.web.uploads import UploadReceiver

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_MIN_UPLOAD_RATE = 1024


def redacted_path(path: bytes) -> str:
    """A request path fit for logs: file URLs are capabilities, so keep a hint only."""
    parsed = parse_url_path(path)
    if parsed is None:
        return "/<other>"
    return f"/{parsed[0][:6]}…/<name>"


def access_log_line(timestamp: str, request: Request) -> str:
    """Combined log format, without the secret part of the URL.

    The client is the peer, or what a trusted proxy's X-Forwarded-For says.
    """
    site = getattr(getattr(request, "channel", None), "site", None)
    host = client_address(request, getattr(site, "trusted_proxies", ()))
    agent = (request.getHeader(b"user-agent") or b"-").decode("latin-1", "replace")
    return '{} - - {} "{} {} {}" {} {} "{}"'.format(
        host,
        timestamp,
        request.method.decode("latin-1", "replace"),
        redacted_path(request.uri),
        request.clientproto.decode("latin-1", "replace"),
        request.code,
        request.sentLength or "-",
        agent.replace('"', "'"),
    )


class UploadSite(Site):
    """A ``Site`` whose PUT bodies stream into storage and whose logs hide file URLs.

    ``idle_timeout``: seconds a connection may send nothing; ``header_timeout``:
    seconds a request head may take; ``min_upload_rate``: bytes per second an
    upload body must average over each idle-timeout window (0: no floor);
    ``trusted_proxies``: addresses whose X-Forwarded-For names the client.
    """

    protocol = UploadChannel  # type: ignore[assignment]
    requestFactory = UploadRequest

    def __init__(
        self,
        uploads: UploadReceiver,
        storage: Storage,
        reactor: IReactorTime,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE,
        trusted_proxies: Iterable[str] = (),
        metadata: MetadataStore | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            UploadResource(storage, metadata, reactor),
            timeout=idle_timeout,
            logFormatter=access_log_line,
            reactor=reactor,
            # Nothing here takes forms, and twisted.web's form parser raises on
            # some Content-Type values (found by tests/test_fuzz.py).
            parsePOSTFormSubmission=False,
        )
        self.uploads = uploads
        self.metrics = metrics
        self.header_timeout = header_timeout
        self.min_upload_rate = min_upload_rate
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.displayTracebacks = False
        self.noisy = False

    def log(self, request: HTTPRequest) -> None:
        """Every finished request passes here: count it, then log it."""
        if self.metrics is not None:
            self.metrics.http_response(request)
        super().log(request)

    def buildProtocol(self, addr):  # type: ignore[no-untyped-def]
        channel = super().buildProtocol(addr)
        channel.header_timeout = self.header_timeout
        return channel


__all__ = ["UploadSite", "access_log_line", "redacted_path"]
