"""The twisted.web ``Site`` of the upload service."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request, Site

from httpupload.slots import parse_url_path
from httpupload.storage import Storage
from httpupload.web.request import UploadChannel, UploadRequest
from httpupload.web.resource import UploadResource
from httpupload.web.uploads import UploadReceiver

# A connection that sends nothing for this long is closed.
IDLE_TIMEOUT_SECONDS = 60


def redacted_path(path: bytes) -> str:
    """A request path fit for logs: file URLs are capabilities, so keep a hint only."""
    parsed = parse_url_path(path)
    if parsed is None:
        return "/<other>"
    return f"/{parsed[0][:6]}…/<name>"


def access_log_line(timestamp: str, request: Request) -> str:
    """Combined log format, without the secret part of the URL."""
    ip = request.getClientAddress()
    host = getattr(ip, "host", "-")
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
    """A ``Site`` whose PUT bodies stream into storage and whose logs hide file URLs."""

    protocol = UploadChannel  # type: ignore[assignment]
    requestFactory = UploadRequest

    def __init__(
        self, uploads: UploadReceiver, storage: Storage, reactor: IReactorTime
    ) -> None:
        super().__init__(
            UploadResource(storage),
            timeout=IDLE_TIMEOUT_SECONDS,
            logFormatter=lambda ts, request: access_log_line(ts, request),
            reactor=reactor,
        )
        self.uploads = uploads
        self.displayTracebacks = False
        self.noisy = False


__all__ = ["UploadSite", "access_log_line", "redacted_path"]
