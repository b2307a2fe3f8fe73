"""The failures of an upload: one ``UploadError`` subclass for each kind.

Every XMPP or HTTP failure of ``UploadClient`` arrives as one of these,
carrying the server's own text (a stanza error's condition and ``<text/>``,
an HTTP status and the start of its body).
"""

from __future__ import annotations

import html
import re

from twisted.words.xish import domish

from httpupload.client.xep import NS_UPLOAD, positive_int, read_stamp
from httpupload.errors import HttpUploadError

__all__ = [
    "FileTooLarge",
    "HttpError",
    "NoAnswer",
    "NoUploadService",
    "ProtocolError",
    "SlotRefused",
    "TransferFailed",
    "UploadError",
    "XmppError",
]


class UploadError(HttpUploadError):
    """Base of every failure of an upload; ``text`` says what happened."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NoUploadService(UploadError):
    """The domain lists no entity offering ``urn:xmpp:http:upload:0``."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"{domain} offers no HTTP File Upload service (XEP-0363)")
        self.domain = domain


class FileTooLarge(UploadError):
    """The file is over the service's limit.

    Raised before any slot request when the service advertised
    ``max-file-size`` (``refused`` is None), or when the service refused the
    slot with ``<file-too-large/>`` (``refused`` is that ``SlotRefused``).
    """

    def __init__(
        self,
        size: int,
        max_file_size: int | None,
        service: str,
        refused: SlotRefused | None = None,
    ) -> None:
        if refused is not None:
            text = f"{service} refused {size} bytes as too large"
            if max_file_size is not None:
                text += f" (at most {max_file_size})"
            if refused.server_text:
                text += f": {refused.server_text}"
        else:
            text = (
                f"the file is {size} bytes; {service} takes at most "
                f"{max_file_size} bytes"
            )
        super().__init__(text)
        self.size = size
        self.max_file_size = max_file_size
        self.service = service
        self.refused = refused


class XmppError(UploadError):
    """An IQ (disco or slot request) answered with a stanza error."""

    def __init__(
        self,
        what: str,
        entity: str,
        condition: str,
        error_type: str | None,
        server_text: str | None,
        app_condition: domish.Element | None = None,
    ) -> None:
        detail = condition + (f" ({server_text})" if server_text else "")
        super().__init__(f"{what} refused by {entity}: {detail}")
        self.entity = entity
        self.condition = condition
        self.error_type = error_type
        #: The ``<text/>`` of the stanza error, as the server wrote it.
        self.server_text = server_text
        self.app_condition = app_condition


class SlotRefused(XmppError):
    """The service refused the slot request (XEP-0363 §5)."""

    @property
    def too_large(self) -> bool:
        """The error carries XEP-0363's ``<file-too-large/>``."""
        element = self.app_condition
        return element is not None and (element.uri, element.name) == (
            NS_UPLOAD,
            "file-too-large",
        )

    @property
    def max_file_size(self) -> int | None:
        """``<file-too-large><max-file-size>``, when the error carries it."""
        element = self.app_condition
        if element is None or not self.too_large:
            return None
        for child in element.elements(NS_UPLOAD, "max-file-size"):
            return positive_int(str(child))
        return None

    @property
    def retry_at(self) -> float | None:
        """``<retry stamp=…/>`` as Unix time: when asking again may succeed."""
        element = self.app_condition
        if element is None or (element.uri, element.name) != (NS_UPLOAD, "retry"):
            return None
        return read_stamp(element.getAttribute("stamp"))


class NoAnswer(UploadError):
    """An IQ got no answer: timed out, or the stream closed first."""


class ProtocolError(UploadError):
    """The service's answer does not follow XEP-0363 (no slot, no URL, …)."""


class HttpError(UploadError):
    """The PUT got an HTTP status other than 2xx."""

    def __init__(
        self, status: int, phrase: str, body: str, url: str, content_type: str = ""
    ) -> None:
        text = f"HTTP {status} {phrase}".rstrip()
        summary = _body_summary(body, content_type)
        if summary:
            text += f": {summary}"
        super().__init__(f"upload to {url} failed: {text}")
        self.status = status
        self.phrase = phrase
        #: The response body (its first 4 KiB at most, decoded leniently).
        self.body = body
        #: The PUT URL without its query string (which may hold a token).
        self.url = url


class TransferFailed(UploadError):
    """The PUT got no HTTP answer: refused, reset, TLS failure or no progress."""


_HIDDEN_HTML = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
MAX_SUMMARY = 300


def _body_summary(body: str, content_type: str) -> str:
    """An error body as one short line (an HTML page as its text)."""
    text = body
    if "html" in content_type.lower() or text.lstrip()[:1] == "<":
        text = html.unescape(_TAG.sub(" ", _HIDDEN_HTML.sub(" ", text)))
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUMMARY else line[: MAX_SUMMARY - 1] + "…"
