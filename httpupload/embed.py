"""Putting the upload resource into a twisted.web ``Site`` someone else owns.

``UploadSite`` is the whole HTTP side with both guarantees of the upload
path: a PUT body is written once, straight into storage, and a refused PUT
is answered from its headers (without ``100 Continue``).  Both live in our
request and channel classes.  A deployment with a ``Site`` of its own can
mount the resource under a path: ``adopt`` gives its Site our classes (and
both guarantees); without that, uploads still work, through twisted.web's own
body spooling, and ``mount`` says so in a warning at start.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from httpupload.web.interfaces import IUploadDesk
from httpupload.web.request import UploadChannel, UploadRequest
from httpupload.web.resource import UploadResource
from httpupload.web.settings import WebSettings

log = Logger()


def adopt(
    site: Site, receiver: IUploadDesk, settings: WebSettings | None = None
) -> None:
    """Give a host Site our request and channel classes (streaming, early refusal).

    ``settings`` default to the host's idle timeout and no rate floor (the
    host Site's own rules, as before it was adopted).
    """
    if settings is None:
        settings = WebSettings.build(idle_timeout=site.timeOut or 0, min_upload_rate=0)
    site.requestFactory = UploadRequest
    site.protocol = UploadChannel.serving(  # type: ignore[assignment]
        receiver, settings, site.reactor
    )


def adopted(site: Site) -> bool:
    """Whether ``site`` streams PUT bodies to an upload desk (``adopt``)."""
    channel = site.protocol
    return (
        isinstance(site.requestFactory, type)
        and issubclass(site.requestFactory, UploadRequest)
        and isinstance(channel, type)
        and issubclass(channel, UploadChannel)
        and channel.desk is not None
    )


def mount(site: Site, path: bytes, resource: UploadResource) -> None:
    """Serve uploads and downloads at ``/<path>/`` of an existing Site."""
    root = site.resource
    if not isinstance(root, Resource):
        raise TypeError("the host Site's root resource takes no children")
    root.putChild(path, resource)
    if not adopted(site):
        log.warn(
            "httpupload mounted at /{path}/ of a Site with its own request class: "
            "uploads work, but twisted.web spools each body before we see it (a "
            "second copy) and refuses only after the whole body arrived. Call "
            "httpupload.embed.adopt(site, receiver) for streaming and early refusal.",
            path=path.decode("utf-8", "replace"),
        )


__all__ = ["adopt", "adopted", "mount"]
