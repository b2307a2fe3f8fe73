"""Moved to ``httpupload.storage.s3.client`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.client in #11; the lead removes this shim
from httpupload.storage.s3.client import *  # noqa: F403
from httpupload.storage.s3.client import (  # noqa: F401
    THREAD_SIGN_BYTES,
    MAX_PRESIGN_SECONDS,
    CREDENTIALS_REFRESH_SECONDS,
    BLOCKING_TIMEOUT,
    S3Error,
    xml_children,
    error_of,
    endpoint_of,
    object_url,
    query_string,
    BytesProducer,
    _resolve_credentials,
    S3Client,
)
