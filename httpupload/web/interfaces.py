# ruff: noqa: N805 (zope.interface methods are declared without self)
"""The declared seams of a PUT in the web layer (zope.interface, checked by mypy-zope).

A PUT has one owner, an ``IPut`` (``httpupload.web.put.StreamedPut``): made
by the request once its head is in, it judges the PUT through the site's
``IUploadDesk``, streams the body, commits, records and answers.  The
request and the resource reach it through ``IStreamingRequest``; it reaches
its connection through ``IPutConnection``.  Nothing is looked up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from httpupload.web.incoming import IncomingUpload
    from httpupload.web.resumable import Dialect
    from httpupload.web.settings import WebSettings


class IUploadDesk(Interface):
    """Where a site's PUTs are judged and kept track of (``UploadReceiver``)."""

    draining = Attribute("True once the service stops taking uploads.")

    def start(
        path: bytes,
        headers: Headers,
        length: int | None,
        address: str,
        cut_off: Callable[[], None] = ...,
        method: bytes = ...,
        dialect: Dialect = ...,
    ) -> IncomingUpload:
        """Accept a PUT (or an append) from its head and open its write;
        raises UploadRefused.

        ``cut_off`` drops the PUT's connection (a drain ends, or a newer PUT
        of the slot replaces this one).
        """

    def remember_type(file_id: str, content_type: str) -> None:
        """The type a resumable PUT gave, for the appends that finish it."""


class IPutConnection(Interface):
    """What a PUT may ask of the connection it arrives on (``UploadChannel``)."""

    def cut_off() -> None:
        """Drop the connection at once (the client is too slow, or replaced)."""

    def hold_body() -> Callable[[], None] | None:
        """Stop reading (and the idle timer); the callable resumes. None: gone."""

    def keep_until_closed(upload: IncomingUpload) -> None:
        """Release ``upload`` when the connection closes, at the latest."""

    def interim(head: bytes) -> None:
        """Write an interim (1xx) response head before the final one."""

    def close_before_release() -> bool:
        """While draining: close first (True), releasing the upload once closed."""


class IPut(Interface):
    """The one owner of a PUT, from its head to its answer."""

    def refused() -> bool:
        """Whether the PUT was refused from its head (its body is dropped)."""

    def body_received(data: bytes) -> None:
        """A chunk of the body, as it comes off the wire."""

    def respond(request: Request) -> None:
        """The body is in: commit, record and answer ``request`` (201 or why not)."""

    def connection_lost() -> None:
        """The client is gone: a body cut short is thrown away, a whole one kept."""


class IStreamingRequest(Interface):
    """A request whose PUT body streamed to an ``IPut`` (``UploadRequest``)."""

    def streamed_put() -> IPut | None:
        """The owner of this request's PUT, None if it is no PUT."""

    def web_settings() -> WebSettings:
        """The settings of the site the request arrived on."""


__all__ = ["IPut", "IPutConnection", "IStreamingRequest", "IUploadDesk"]
