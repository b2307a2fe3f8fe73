"""Moved to ``httpupload.storage.s3.read`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.read in #11; the lead removes this shim
from httpupload.storage.s3.read import *  # noqa: F403
from httpupload.storage.s3.read import (  # noqa: F401
    _DONE,
    BodyRelay,
    S3StoredFile,
)
