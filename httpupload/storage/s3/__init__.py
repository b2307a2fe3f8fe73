"""The ``Storage`` interface on any S3-compatible object store.

Objects are named ``<prefix><file_id>`` and carry their ``FileInfo`` as
metadata (``meta``).  Two modes share this backend:

- proxy (the default): PUT bodies stream through httpupload into the store
  (``upload``), GETs stream back with Range (``read``); the HTTP layer
  behaves exactly as with the filesystem backend;
- direct (``direct``): a slot's PUT URL is a presigned S3 URL and its GET
  URL a public base in front of the bucket; this backend still stats, lists
  and deletes (expiry, quotas, reconciliation).

The modules: ``backend`` (``S3Storage``), ``client`` (signed requests:
botocore signs, twisted.web's client sends) and ``wire`` (its URLs, queries
and errors, without I/O), ``meta``, ``probe`` (what the store can do, tried
at start-up), ``read``, ``upload``, ``direct``.

This package's own import loads nothing: ``S3Storage`` is imported on first
use, so ``direct`` (which every node imports) needs no botocore, and a
node without the s3 extra gets an ``ImportError`` only when it names
``S3Storage``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from httpupload.storage.s3.backend import MAX_PAGE, S3Storage

__all__ = ["MAX_PAGE", "S3Storage"]

_LAZY = {
    "S3Storage": "httpupload.storage.s3.backend",
    "MAX_PAGE": "httpupload.storage.s3.backend",
}


def __getattr__(name: str) -> object:
    """``S3Storage`` imported when first named (it needs botocore)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
