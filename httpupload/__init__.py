"""httpupload: XEP-0363 HTTP File Upload for Twisted.

The pieces are usable on their own, to embed file upload into an existing
Twisted XMPP deployment: ``UploadHandler`` for a wokkel stream manager or
router, ``UploadSite`` for any twisted.web listener, ``make_service`` for the
whole component.
"""

import httpupload._wokkel_compat  # noqa: F401, I001  (must run before wokkel is imported)

from httpupload.config import Config, load_config, parse_config
from httpupload.errors import ConfigError, HttpUploadError
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

__all__ = [
    "ComponentService",
    "Config",
    "ConfigError",
    "FileInfo",
    "FilesystemStorage",
    "HttpUploadError",
    "KeyRing",
    "Slot",
    "SlotPolicy",
    "SlotSigner",
    "Storage",
    "UploadHandler",
    "UploadReceiver",
    "UploadSite",
    "load_config",
    "make_service",
    "parse_config",
]
