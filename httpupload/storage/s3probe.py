"""Moved to ``httpupload.storage.s3.probe`` in #11; the lead removes this shim."""

# moved to httpupload.storage.s3.probe in #11; the lead removes this shim
from httpupload.storage.s3.probe import *  # noqa: F403
from httpupload.storage.s3.probe import (  # noqa: F401
    PROBE_NAME,
    PROBE_BODY,
    _OK,
    _KEY_OF_CODE,
    CreateOnly,
    StoreCapabilities,
    _probe_info,
    _failed,
    _Probe,
    probe_store,
    check_store,
)
