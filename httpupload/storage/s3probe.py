"""Moved to ``httpupload.storage.s3.probe`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.probe in #11; the lead removes this shim
from httpupload.storage.s3.probe import *  # noqa: F403
from httpupload.storage.s3.probe import (  # noqa: F401
    _KEY_OF_CODE,
    _OK,
    PROBE_BODY,
    PROBE_NAME,
    CreateOnly,
    StoreCapabilities,
    _failed,
    _Probe,
    _probe_info,
    check_store,
    probe_store,
)
