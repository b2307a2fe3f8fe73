"""``S3Storage``: the ``Storage`` interface on one bucket, under one prefix.

Objects are named ``<prefix><file_id>`` and carry their ``FileInfo`` as
metadata (``meta``).  Proxy mode writes through ``upload`` and reads through
``read``; direct mode uses ``presign_put`` and ``public_url`` (see
``direct``).  Signing is botocore's, HTTP is twisted.web's client
(``client``); nothing here blocks the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from urllib.parse import quote

from botocore.credentials import Credentials
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from httpupload.config_s3 import MIN_PART_SIZE, S3Settings
from httpupload.slots import FILE_ID_RE
from httpupload.storage import FileInfo, PendingUpload, Storage, StoredFile
from httpupload.storage.s3.client import (
    S3Client,
    aws_chain,
    query_string,
    xml_children,
)
from httpupload.storage.s3.meta import DEFAULT_CONTENT_TYPE, info_from_headers
from httpupload.storage.s3.probe import StoreCapabilities, check_store
from httpupload.storage.s3.read import S3StoredFile
from httpupload.storage.s3.upload import S3Upload

log = Logger()

# ListObjectsV2 and ListMultipartUploads return at most 1000 per page.
MAX_PAGE = 1000


class S3Storage:
    """Stored files as objects in one bucket, under one prefix.

    ``reactor`` also provides ``IReactorThreads`` and ``IReactorTCP`` (see
    ``S3Client``, which gets ``credential_chain`` too).
    """

    def __init__(
        self,
        settings: S3Settings,
        reactor: IReactorTime,
        *,
        agent: IAgent | None = None,
        threadpool: ThreadPool | None = None,
        timeout: float = 120.0,
        page_size: int = MAX_PAGE,
        credential_chain: Callable[[], Credentials | None] = aws_chain,
    ) -> None:
        if settings.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.settings = settings
        self._reactor = reactor
        self._page_size = max(1, min(page_size, MAX_PAGE))
        self.client = S3Client(
            settings,
            reactor,
            agent=agent,
            threadpool=threadpool,
            timeout=timeout,
            credential_chain=credential_chain,
        )

    def start(self) -> Deferred[None]:
        """Resolve credentials (in a thread); call at start-up.

        Without it the first request does it, but a missing credential then
        shows only when the first upload fails, and presign_put needs it.
        """
        return self.client.start()

    def check_at_start(self, *, largest_file: int | None = None) -> StoreCapabilities:
        """Resolve credentials and probe the store, blocking (``s3probe``).

        For start-up, before the reactor runs: a store that would lose
        uploads (one that drops user metadata, say) raises ``ConfigError``
        naming what it lacks, so the service stops with one line before it
        listens; one that ignores conditional writes is logged as a warning.
        ``largest_file``: the largest upload the service grants, if known.
        """
        return check_store(self.client, largest_file=largest_file)

    def close(self) -> Deferred[None]:
        """Release pooled connections (at shutdown)."""
        return self.client.close()

    def _key(self, file_id: str) -> str | None:
        # Ids come from URLs: only the alphabet new_file_id() uses names an object.
        if not FILE_ID_RE.fullmatch(file_id):
            return None
        return self.settings.prefix + file_id

    # -- writing -----------------------------------------------------------

    def begin_write(self, file_id: str) -> S3Upload:
        key = self._key(file_id)
        if key is None:
            raise ValueError(f"not a file id: {file_id!r}")
        return S3Upload(
            self.client, key, self.settings.part_size, self.settings.parts_in_flight
        )

    # -- reading -----------------------------------------------------------

    async def _head(self, file_id: str) -> tuple[str, Headers] | None:
        key = self._key(file_id)
        if key is None:
            return None
        response, _ = await self.client.call("HEAD", key, ok=(200, 404))
        if response.code == 404:
            return None
        return key, response.headers

    async def _stat(self, file_id: str) -> FileInfo | None:
        found = await self._head(file_id)
        return None if found is None else info_from_headers(file_id, found[1])

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        return ensureDeferred(self._stat(file_id))

    async def _open(self, file_id: str) -> StoredFile | None:
        found = await self._head(file_id)
        if found is None:
            return None
        key, headers = found
        info = info_from_headers(file_id, headers)
        if info is None:
            return None
        etag = (headers.getRawHeaders(b"ETag") or [b""])[0].decode("latin-1")
        return S3StoredFile(self.client, key, info, etag)

    def open_read(self, file_id: str) -> Deferred[StoredFile | None]:
        return ensureDeferred(self._open(file_id))

    # -- deleting and listing ----------------------------------------------

    async def _delete(self, file_id: str) -> bool:
        found = await self._head(file_id)
        if found is None:
            return False
        # S3's DELETE says 204 whether or not there was an object: hence the HEAD.
        await self.client.call("DELETE", found[0], ok=(200, 204, 404))
        return True

    def delete(self, file_id: str) -> Deferred[bool]:
        return ensureDeferred(self._delete(file_id))

    async def _list_ids(self) -> set[str]:
        prefix = self.settings.prefix
        ids: set[str] = set()
        token: str | None = None
        while True:
            params: dict[str, str | int | None] = {
                "list-type": 2,
                "prefix": prefix,
                "delimiter": "/",
                "max-keys": self._page_size,
            }
            if token:
                params["continuation-token"] = token
            _, body = await self.client.call("GET", "", query=query_string(params))
            root = xml_children(body)
            for contents in root.iter("Contents"):
                key = contents.findtext("Key") or ""
                file_id = key[len(prefix) :] if key.startswith(prefix) else ""
                if FILE_ID_RE.fullmatch(file_id):
                    ids.add(file_id)
            token = root.findtext("NextContinuationToken")
            if root.findtext("IsTruncated") != "true" or not token:
                return ids

    def list_ids(self) -> Deferred[set[str]]:
        return ensureDeferred(self._list_ids())

    def free_space(self) -> Deferred[int | None]:
        """Object stores have no free space to tell (a quota error says NoSpace)."""
        return succeed(None)

    # -- the sweep of crashed nodes' uploads ---------------------------------

    async def _abort_stale(self, older_than: float) -> int:
        cutoff = self._reactor.seconds() - older_than
        stale: list[tuple[str, str]] = []
        listed = await self.client.multipart_uploads(
            self.settings.prefix, self._page_size
        )
        for key, upload_id, initiated in listed:
            try:
                started = datetime.fromisoformat(initiated).timestamp()
            except ValueError:
                continue
            if started < cutoff and key and upload_id:
                stale.append((key, upload_id))
        for key, upload_id in stale:
            await self.client.abort_multipart(key, upload_id)
        if stale:
            log.info("Aborted {count} stale multipart uploads", count=len(stale))
        return len(stale)

    def abort_stale_uploads(self, older_than: float | None = None) -> Deferred[int]:
        """Abort multipart uploads under the prefix started over ``older_than`` s ago.

        What a crashed node leaves behind: its parts cost storage, and no
        object, until aborted.  ``older_than`` defaults to the setting
        ``stale_multipart_after``, which must be above the longest upload
        (a live upload aborted fails at its commit).
        """
        if older_than is None:
            older_than = self.settings.stale_multipart_after
        return ensureDeferred(self._abort_stale(older_than))

    # -- direct mode -----------------------------------------------------------

    def presign_put(
        self, file_id: str, size: int, content_type: str | None, expires_in: int
    ) -> tuple[str, dict[str, str]]:
        """A presigned PUT URL and the headers its request must carry.

        The signature binds Content-Length and Content-Type: the store
        refuses another length or type, a PUT without the type, and an
        expired URL.  Without a type from the slot it binds
        ``application/octet-stream``: were the type left free, the uploader
        would choose what the bucket serves (``text/html``, shown inline
        with none of our CSP, ``nosniff`` or disposition headers), and some
        stores (SeaweedFS) sniff one from the bytes when the PUT names none.
        """
        key = self._key(file_id)
        if key is None:
            raise ValueError(f"not a file id: {file_id!r}")
        headers = {
            "Content-Length": str(size),
            "Content-Type": content_type or DEFAULT_CONTENT_TYPE,
        }
        return self.client.presign("PUT", key, headers, expires_in), headers

    def public_url(self, file_id: str, filename: str) -> str:
        """The GET URL of a direct upload: the public base, the key, the name.

        The object is found by its key alone; the file name rides in the
        query (ignored by S3 websites and CDNs) so people see it.
        """
        base = self.settings.public_base_url
        if not base:
            raise ValueError("direct mode needs public_base_url")
        key = quote(self.settings.prefix + file_id, safe="/~")
        return (
            f"{base.rstrip('/')}/{key}?{quote('filename')}={quote(filename, safe='')}"
        )


def _conforms(
    storage: S3Storage, upload: S3Upload, opened: S3StoredFile
) -> tuple[Storage, PendingUpload, StoredFile]:
    """Never called: mypy checks here that the classes meet the protocols."""
    return storage, upload, opened
