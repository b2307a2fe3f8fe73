"""``[storage.s3]``: what the S3 backend needs to know, and how it is read.

Part of the config layer, so the config can be read (and checked) on a node
without the S3 extra, and without importing storage (or twisted.web): the
storage backend imports ``S3Settings`` from here, never the other way.  The
field defaults below are the defaults of the table's keys.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from httpupload.config_reader import Section, base_url
from httpupload.errors import ConfigError

MiB = 1024 * 1024
# S3 refuses multipart parts under 5 MiB (all but the last).
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024**3  # S3's largest part
MAX_PARTS_IN_FLIGHT = 64
DAY = 86400
# The stale multipart sweep runs hourly: a shorter age would only cut live
# uploads; past a month, a crashed node's parts cost storage for nothing.
MIN_STALE_MULTIPART_AFTER = 3600
MAX_STALE_MULTIPART_AFTER = 30 * DAY
_BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")

Addressing = Literal["path", "virtual"]
Mode = Literal["proxy", "direct"]


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
    addressing: Addressing = "path"
    # proxy: bytes flow through httpupload; direct: presigned PUT to the store.
    mode: Mode = "proxy"
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


S3_KEYS = tuple(
    name
    for f in dataclasses.fields(S3Settings)
    for name in (
        (f.name, f"{f.name}_file") if f.name == "secret_access_key" else (f.name,)
    )
)
S3_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(S3Settings)
    if f.default is not dataclasses.MISSING and f.default is not None
}


def parse_s3(values: Any, base_dir: Path) -> S3Settings:
    """``[storage.s3]`` as ``S3Settings``, every field checked."""
    s = Section("storage.s3", values, S3_KEYS, S3_DEFAULTS)
    bucket = s.string("bucket") or ""
    if not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(s.key("bucket"), f"not a bucket name: {bucket!r}")
    prefix = s.values["prefix"]
    if not isinstance(prefix, str) or prefix.startswith("/"):
        raise ConfigError(s.key("prefix"), 'must be a string not starting with "/"')
    endpoint = s.string("endpoint", required=False)
    if endpoint is not None:
        endpoint = base_url(s, "endpoint", endpoint).rstrip("/")
    key_id = s.string("access_key_id", required=False)
    secret = s.secret("secret_access_key", base_dir, required=key_id is not None)
    if secret is not None and key_id is None:
        raise ConfigError(s.key("access_key_id"), "missing (secret_access_key given)")
    addressing = cast(Addressing, s.choice("addressing", ("path", "virtual")))
    mode = cast(Mode, s.choice("mode", ("proxy", "direct")))
    public = s.string("public_base_url", required=mode == "direct")
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=s.string("region") or "",
        access_key_id=key_id,
        secret_access_key=secret,
        addressing=addressing,
        mode=mode,
        part_size=s.positive_int(
            "part_size", minimum=MIN_PART_SIZE, maximum=MAX_PART_SIZE
        ),
        parts_in_flight=s.positive_int("parts_in_flight", maximum=MAX_PARTS_IN_FLIGHT),
        public_base_url=base_url(s, "public_base_url", public) if public else None,
        stale_multipart_after=s.positive_int(
            "stale_multipart_after",
            minimum=MIN_STALE_MULTIPART_AFTER,
            maximum=MAX_STALE_MULTIPART_AFTER,
        ),
    )


__all__ = ["DAY", "MIN_PART_SIZE", "MiB", "S3Settings", "parse_s3"]
