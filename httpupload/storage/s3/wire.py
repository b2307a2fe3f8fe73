"""What goes on the wire to an S3 store, with no I/O: URLs, queries, errors, bodies.

Pure helpers of ``client`` (and of the probe and the uploads): the URL of
an object in either addressing style, S3's query encoding, the error an
answer describes, its XML, and a request body already in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from httpupload.config_s3 import S3Settings


class S3Error(Exception):
    """The store answered with an error status (or an error body under 200)."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"S3 {status} {code}: {message}".rstrip(": "))
        self.status = status
        self.code = code
        self.message = message


def xml_children(body: bytes) -> ElementTree.Element:
    """The root of an S3 XML answer, with namespaces dropped from tags."""
    # The store is one the operator configured: its XML is trusted input.
    root = ElementTree.fromstring(body)  # noqa: S314
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    return root


def error_of(status: int, body: bytes) -> S3Error:
    """The S3Error an error answer describes (code and message from its XML)."""
    code, message = f"HTTP{status}", ""
    if body.strip():
        try:
            root = xml_children(body)
        except ElementTree.ParseError:
            pass
        else:
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
    return S3Error(status, code, message)


def endpoint_of(settings: S3Settings) -> str:
    """The store's base URL: the configured endpoint, else AWS's for the region."""
    if settings.endpoint:
        return settings.endpoint.rstrip("/")
    return f"https://s3.{settings.region}.amazonaws.com"


def object_url(settings: S3Settings, key: str, query: str = "") -> str:
    """The URL of ``key`` (or of the bucket for ``""``), path-style or virtual-host."""
    parts = urlsplit(endpoint_of(settings))
    path = quote(key, safe="/~")
    if settings.addressing == "virtual":
        netloc = f"{settings.bucket}.{parts.netloc}"
        url = f"{parts.scheme}://{netloc}{parts.path}/{path}"
    else:
        url = f"{parts.scheme}://{parts.netloc}{parts.path}/{settings.bucket}/{path}"
    return f"{url}?{query}" if query else url


def query_string(params: Mapping[str, str | int | None]) -> str:
    """A query string with S3's encoding; a value of None gives ``name=``."""
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(str(value or ''), safe='-_.~')}"
        for name, value in sorted(params.items())
    )


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, handed to the transport in one write."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        self._data = b""
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self._data = b""
