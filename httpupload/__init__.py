"""httpupload: XEP-0363 HTTP File Upload for Twisted.

The pieces are usable on their own, to embed file upload into an existing
Twisted XMPP deployment: ``UploadHandler`` for a wokkel stream manager or
router, ``UploadSite`` for any twisted.web listener, ``open_node`` and
``attach_handlers`` for the whole handler set on a stream or router of one's
own, ``make_service`` for the whole component.

The names below are resolved on first access (a module ``__getattr__``, as
klein does): ``import httpupload.client`` (the uploading side) then loads no
server module, and ``tests/test_exports.py`` pins both.  Importing the
package applies the wokkel shim first, before anything can import wokkel.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

import httpupload._wokkel_compat  # noqa: F401  (must run before wokkel is imported)

if TYPE_CHECKING:  # what the names are, for type checkers and readers
    from httpupload.assembly import Node, attach_handlers, open_node
    from httpupload.config import Config, load_config, parse_config
    from httpupload.errors import ConfigError, HttpUploadError
    from httpupload.granting import SlotGranter
    from httpupload.keys import KeyRing
    from httpupload.policy import SlotPolicy
    from httpupload.service import make_service
    from httpupload.slots import Slot, SlotSigner
    from httpupload.storage import FileInfo, Storage
    from httpupload.storage.filesystem import FilesystemStorage
    from httpupload.web.site import UploadSite
    from httpupload.web.uploads import UploadReceiver
    from httpupload.xmpp.component import ComponentService
    from httpupload.xmpp.handler import UploadHandler

#: Each exported name and the module that defines it.
_EXPORTS = {
    "ComponentService": "httpupload.xmpp.component",
    "Config": "httpupload.config",
    "ConfigError": "httpupload.errors",
    "FileInfo": "httpupload.storage",
    "FilesystemStorage": "httpupload.storage.filesystem",
    "HttpUploadError": "httpupload.errors",
    "KeyRing": "httpupload.keys",
    "Node": "httpupload.assembly",
    "Slot": "httpupload.slots",
    "SlotGranter": "httpupload.granting",
    "SlotPolicy": "httpupload.policy",
    "SlotSigner": "httpupload.slots",
    "Storage": "httpupload.storage",
    "UploadHandler": "httpupload.xmpp.handler",
    "UploadReceiver": "httpupload.web.uploads",
    "UploadSite": "httpupload.web.site",
    "attach_handlers": "httpupload.assembly",
    "load_config": "httpupload.config",
    "make_service": "httpupload.service",
    "open_node": "httpupload.assembly",
    "parse_config": "httpupload.config",
}

__all__ = [
    "ComponentService",
    "Config",
    "ConfigError",
    "FileInfo",
    "FilesystemStorage",
    "HttpUploadError",
    "KeyRing",
    "Node",
    "Slot",
    "SlotGranter",
    "SlotPolicy",
    "SlotSigner",
    "Storage",
    "UploadHandler",
    "UploadReceiver",
    "UploadSite",
    "attach_handlers",
    "load_config",
    "make_service",
    "open_node",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    """An exported name, imported from its module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
