"""Moved to ``httpupload.storage.s3.client`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.client in #11; the lead removes this shim
from httpupload.storage.s3.client import *  # noqa: F403
from httpupload.storage.s3.client import (  # noqa: F401
    BLOCKING_TIMEOUT,
    CREDENTIALS_REFRESH_SECONDS,
    MAX_PRESIGN_SECONDS,
    THREAD_SIGN_BYTES,
    BytesProducer,
    S3Client,
    S3Error,
    _resolve_credentials,
    aws_chain,
    endpoint_of,
    error_of,
    object_url,
    query_string,
    xml_children,
)
