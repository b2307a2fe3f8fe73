"""Moved to ``httpupload.storage.s3.meta`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.meta in #11; the lead removes this shim
from httpupload.storage.s3.meta import *  # noqa: F403
from httpupload.storage.s3.meta import (  # noqa: F401
    META,
    PARTIAL,
    DEFAULT_CONTENT_TYPE,
    info_headers,
    _header,
    info_from_headers,
)
