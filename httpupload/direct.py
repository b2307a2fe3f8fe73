"""Moved to ``httpupload.storage.s3.direct`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.direct in #11; the lead removes this shim
from httpupload.storage.s3.direct import *  # noqa: F403
from httpupload.storage.s3.direct import (  # noqa: F401
    DirectRecord,
    DirectRecords,
    DirectStorage,
    DirectUrls,
    complete_direct_uploads,
)
