"""Moved to ``httpupload.storage.s3.meta`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.meta in #11; the lead removes this shim
from httpupload.storage.s3.meta import *  # noqa: F403
from httpupload.storage.s3.meta import (  # noqa: F401
    DEFAULT_CONTENT_TYPE,
    META,
    PARTIAL,
    _header,
    info_from_headers,
    info_headers,
)
