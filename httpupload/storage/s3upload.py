"""Moved to ``httpupload.storage.s3.upload`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.upload in #11; the lead removes this shim
from httpupload.storage.s3.upload import *  # noqa: F403
from httpupload.storage.s3.upload import (  # noqa: F401
    _FULL_CODES,
    S3Upload,
    _complete_body,
    refusal,
)
