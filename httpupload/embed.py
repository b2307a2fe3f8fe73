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

from httpupload.web.request import UploadChannel, UploadRequest
from httpupload.web.resource import UploadResource
from httpupload.web.uploads import UploadReceiver

log = Logger()


def adopt(site: Site, receiver: UploadReceiver) -> None:
    """Give a host Site our request and channel classes (streaming, early refusal)."""
    site.requestFactory = UploadRequest
    site.protocol = UploadChannel  # type: ignore[assignment]
    site.uploads = receiver  # type: ignore[attr-defined]


def adopted(site: Site) -> bool:
    return (
        isinstance(site.requestFactory, type)
        and issubclass(site.requestFactory, UploadRequest)
        and getattr(site, "uploads", None) is not None
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
