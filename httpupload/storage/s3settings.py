"""What the S3 backend needs to know, apart from the backend itself.

Kept free of botocore so that the config can be read (and checked) on a
node that has no S3 extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MiB = 1024 * 1024
# S3 refuses multipart parts under 5 MiB (all but the last).
MIN_PART_SIZE = 5 * MiB
DAY = 86400


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    # Prepended to every object key ("uploads/", say); "" for none.
    prefix: str = ""
    # None: AWS itself, found from the region.
    endpoint: str | None = None
    region: str = "us-east-1"
    # None: the usual AWS chain (environment, shared files, ...).
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    addressing: Literal["path", "virtual"] = "path"
    # proxy: bytes flow through httpupload; direct: presigned PUT to the store.
    mode: Literal["proxy", "direct"] = "proxy"
    part_size: int = 8 * MiB
    # Parts uploading at once per upload; memory per upload is about
    # (parts_in_flight + 1) * part_size.
    parts_in_flight: int = 2
    # direct mode: where GETs go (a bucket website or a CDN in front of it).
    public_base_url: str | None = None
    # The hourly sweep aborts multipart uploads started longer ago than this
    # (seconds): what a crashed node left.  Above the longest upload, or the
    # sweep cuts a live one.
    stale_multipart_after: int = DAY
