"""One upload into S3: a single PutObject, or a multipart upload for large files.

Under ``part_size`` the body is kept in memory and sent as one PutObject at
commit.  At ``part_size`` a multipart upload starts and parts go out as they
fill, at most ``parts_in_flight`` at once; while that many are on their way
``write`` returns a Deferred, so the caller stops reading the body and
memory stays near ``(parts_in_flight + 1) * part_size`` however large the
file.  Any failure aborts the multipart upload: a broken upload leaves no
object behind (and the stale-upload sweep catches what a crash leaves).

Create-only: the final PutObject or CompleteMultipartUpload carries
``If-None-Match: *`` (AWS, SeaweedFS and MinIO honour it), so two PUTs
racing for one slot cannot overwrite each other.  A multipart upload's
metadata is fixed when it starts, before the digest is known; the object is
created marked partial and its info is set by a copy onto itself (a
metadata-only operation on the stores we know), which readers see at once.

One upload in flight per object, across nodes: a multipart upload lists
the key's multipart uploads in progress, creates its own, then aborts those
listed (a phone's retry on another node while this one still holds the dead
connection), so the older one's next part fails with ``NoSuchUpload`` and
it gives up; nothing is written twice for one slot.  Only uploads
listed before ours existed are aborted, so two racing uploads can never
abort each other (each would have to exist before the other): at worst
both go on and the create-only commit decides.  Single-request uploads
(under ``part_size``) stay in memory until the commit and need none of this.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import quote
from xml.sax.saxutils import escape

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from httpupload.errors import (
    DuplicateFile,
    NoSpace,
    StorageError,
    StorageFailed,
    StoreDown,
)
from httpupload.logs import redact
from httpupload.storage import FileInfo
from httpupload.storage.s3.client import S3Client, S3Error, query_string, xml_children
from httpupload.storage.s3.meta import PARTIAL, info_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

log = Logger()

# What S3-compatible stores say when they are out of room or over a quota.
_FULL_CODES = frozenset(
    {"QuotaExceeded", "InsufficientStorage", "StorageFull", "XMinioStorageFull"}
)


def refusal(error: BaseException) -> StorageError:
    """The storage error for a failed store call (S3's answer, or none at all)."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, S3Error):
        if error.status == 412 or error.code == "ConditionalRequestConflict":
            return DuplicateFile("This slot has already been used")
        if error.code in _FULL_CODES or error.status == 507:
            return NoSpace("Insufficient storage")
        if error.status >= 500:
            return StoreDown(f"Storage unavailable: {error.code}")
        return StorageFailed(f"Storage error: {error.code}")
    # Not an answer at all: the store could not be reached (or timed out).
    return StoreDown(f"Storage unavailable: {type(error).__name__}")


def _complete_body(etags: Mapping[int, str]) -> bytes:
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etags[n])}</ETag></Part>"
        for n in sorted(etags)
    )
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()


class S3Upload:
    """A ``PendingUpload`` into the object ``key``."""

    def __init__(
        self, client: S3Client, key: str, part_size: int, parts_in_flight: int
    ) -> None:
        self._client = client
        self._key = key
        self._part_size = part_size
        self._max_in_flight = max(1, parts_in_flight)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._multipart = False
        self._creating = False
        self._upload_id: str | None = None
        self._next_part = 1
        self._queued: deque[tuple[int, bytes]] = deque()
        self._in_flight = 0
        self._etags: dict[int, str] = {}
        self._error: BaseException | None = None
        self._done = False
        self._write_waiters: list[Deferred[None]] = []
        self._idle_waiters: list[Deferred[None]] = []

    # -- receiving the body ------------------------------------------------

    def write(self, data: bytes) -> Deferred[None] | None:
        if self._done or self._error is not None:
            return None
        self._chunks.append(data)
        self._buffered += len(data)
        while self._buffered >= self._part_size:
            self._cut(self._part_size)
        if self._outstanding() >= self._max_in_flight:
            waiter: Deferred[None] = Deferred()
            self._write_waiters.append(waiter)
            return waiter
        return None

    def _outstanding(self) -> int:
        return self._in_flight + len(self._queued)

    def _cut(self, size: int) -> None:
        """Queue the first ``size`` buffered bytes as the next part."""
        whole = b"".join(self._chunks)
        part, rest = whole[:size], whole[size:]
        self._chunks = [rest] if rest else []
        self._buffered = len(rest)
        self._queued.append((self._next_part, part))
        self._next_part += 1
        if not self._multipart:
            self._multipart = self._creating = True
            ensureDeferred(self._create())
        self._pump()

    async def _create(self) -> None:
        # Listed before ours exists: everything listed is older than ours.
        older = await self._older_uploads()
        try:
            _, body = await self._client.call(
                "POST",
                self._key,
                query=query_string({"uploads": None}),
                headers={f"x-amz-meta-{PARTIAL}": "1"},
            )
            self._upload_id = xml_children(body).findtext("UploadId")
            if not self._upload_id:
                raise S3Error(200, "NoUploadId", "CreateMultipartUpload gave no id")
        except Exception as e:
            self._fail(e)
        else:
            self._pump()  # parts go out meanwhile; commit waits for both
            await self._abort_older(older)
        self._creating = False
        self._pump()
        self._settle()

    async def _older_uploads(self) -> list[str]:
        """Ids of the key's multipart uploads in progress (none if unlisted)."""
        try:
            return await self._list_uploads()
        except Exception as e:
            log.warn(
                "Could not list the uploads in flight of {key}: {error}",
                key=redact(self._key),
                error=redact(str(e)),
            )
            return []

    async def _abort_older(self, older: list[str]) -> None:
        """Abort the key's uploads that were in progress before ours began.

        A failure here is logged, not fatal: the create-only commit still
        keeps the two from overwriting each other.
        """
        for upload_id in older:
            try:
                await self._client.abort_multipart(self._key, upload_id)
            except Exception as e:
                log.warn(
                    "Could not abort an older upload of {key}: {error}",
                    key=redact(self._key),
                    error=redact(str(e)),
                )
        if older:
            log.info(
                "A newer upload of {key} aborted {count} older ones in flight",
                key=redact(self._key),
                count=len(older),
            )

    async def _list_uploads(self) -> list[str]:
        """The id of every multipart upload in progress of exactly this key."""
        listed = await self._client.multipart_uploads(self._key)
        return [
            upload_id for key, upload_id, _ in listed if key == self._key and upload_id
        ]

    def _pump(self) -> None:
        if self._upload_id is None or self._error is not None:
            return
        while self._queued and self._in_flight < self._max_in_flight:
            number, data = self._queued.popleft()
            self._in_flight += 1
            ensureDeferred(self._send_part(number, data))

    async def _send_part(self, number: int, data: bytes) -> None:
        assert self._upload_id is not None
        try:
            response, _ = await self._client.call(
                "PUT",
                self._key,
                query=query_string({"partNumber": number, "uploadId": self._upload_id}),
                body=data,
            )
            etag = response.headers.getRawHeaders(b"ETag", [b""])[0].decode("latin-1")
            if not etag:
                raise S3Error(response.code, "NoETag", f"part {number} has no ETag")
            self._etags[number] = etag
        except Exception as e:
            self._fail(e)
        finally:
            self._in_flight -= 1
        self._pump()
        self._settle()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            log.warn(
                "S3 upload of {key} failed: {error}",
                key=redact(self._key),
                error=redact(str(error)),
            )
        self._queued.clear()
        self._chunks = []
        self._settle()

    def _settle(self) -> None:
        """Wake writers when there is room, and committers when all is idle."""
        if self._error is not None or self._outstanding() < self._max_in_flight:
            waiters, self._write_waiters = self._write_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        if not self._creating and self._in_flight == 0 and not self._queued:
            idle, self._idle_waiters = self._idle_waiters, []
            for waiter in idle:
                waiter.callback(None)

    def _idle(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        self._settle()
        return waiter

    # -- commit and abort --------------------------------------------------

    def commit(self, info: FileInfo) -> Deferred[None]:
        if self._done:
            raise RuntimeError("upload already committed or aborted")
        self._done = True
        return ensureDeferred(self._commit(info))

    async def _commit(self, info: FileInfo) -> None:
        if not self._multipart and self._error is None:
            body = b"".join(self._chunks)
            self._chunks = []
            try:
                await self._client.call(
                    "PUT",
                    self._key,
                    headers={**info_headers(info), "If-None-Match": "*"},
                    body=body,
                )
            except Exception as e:
                raise refusal(e) from None
            return
        if self._buffered and self._error is None:
            self._cut(self._buffered)
        await self._idle()
        try:
            if self._error is not None:
                raise self._error
            await self._complete()
        except Exception as e:
            await self._abort_remote()
            raise refusal(e) from None
        try:
            await self._set_info(info)
        except Exception as e:
            # The object exists but cannot be given its info: take it away.
            await self._delete_quietly()
            raise refusal(e) from None

    async def _complete(self) -> None:
        assert self._upload_id is not None
        _, body = await self._client.call(
            "POST",
            self._key,
            query=query_string({"uploadId": self._upload_id}),
            headers={"If-None-Match": "*"},
            body=_complete_body(self._etags),
        )
        # S3 may answer 200 and put the error in the body.
        root = xml_children(body)
        if root.tag == "Error":
            raise S3Error(
                200, root.findtext("Code") or "Error", root.findtext("Message") or ""
            )
        self._upload_id = None

    async def _set_info(self, info: FileInfo) -> None:
        """Replace the partial marker with the file's info (a copy onto itself)."""
        source = quote(f"/{self._client.settings.bucket}/{self._key}", safe="/~")
        _, body = await self._client.call(
            "PUT",
            self._key,
            headers={
                **info_headers(info),
                "x-amz-copy-source": source,
                "x-amz-metadata-directive": "REPLACE",
            },
        )
        root = xml_children(body) if body.strip() else None
        if root is not None and root.tag == "Error":
            raise S3Error(
                200, root.findtext("Code") or "Error", root.findtext("Message") or ""
            )

    async def _delete_quietly(self) -> None:
        try:
            await self._client.call("DELETE", self._key)
        except Exception as e:
            log.warn(
                "Could not delete {key}: {error}",
                key=redact(self._key),
                error=redact(str(e)),
            )

    async def _abort_remote(self) -> None:
        """Abort the multipart upload once every part has settled."""
        if not self._multipart:
            return
        await self._idle()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            await self._client.abort_multipart(self._key, upload_id)
        except Exception as e:
            # The sweep (abort_stale_uploads) gets it later.
            log.warn(
                "Could not abort the upload of {key}: {error}",
                key=redact(self._key),
                error=redact(str(e)),
            )

    def abort(self) -> Deferred[None]:
        if self._done:
            return succeed(None)
        self._done = True
        # Not a failure worth a warning: the client went away, or was refused.
        self._error = self._error or StorageFailed("aborted")
        self._fail(self._error)

        def quiet(result: object) -> None:
            if isinstance(result, Failure):
                log.failure("Aborting an S3 upload failed", result)

        return ensureDeferred(self._abort_remote()).addBoth(quiet)
