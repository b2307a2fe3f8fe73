"""What the S3 backend needs of a store, tried once at start-up.

"S3-compatible" stores promise less than S3, and what they leave out is
not always refused; it can be silently dropped.  A store that drops user
metadata takes every upload (201) and then has no file to serve (404: an
object without our ``x-amz-meta-sha256`` reads as a direct-mode upload of
no name, which never matches the GET URL's).  So before the service
listens, the probe writes, reads back and deletes one small object under
the prefix, with the metadata ``s3meta`` writes and the requests the
commits make:

- a PutObject with the file's info as ``x-amz-meta-*`` and ``If-None-Match:
  *``, read back by a HEAD: the metadata must come back as written;
- the same create-only PutObject again: honoured, it fails with ``412``;
- a copy of the object onto itself replacing its metadata (how a multipart
  upload gets its info): the new metadata must come back.

The probe blocks (``S3Client.call_blocking``): it runs before the reactor,
as the PostgreSQL store's open does.  Its object's name is not a file id,
so listings and sweeps never take it for a file.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web.http_headers import Headers

from httpupload.errors import ConfigError
from httpupload.storage import FileInfo
from httpupload.storage.s3.client import S3Client, S3Error, error_of, xml_children
from httpupload.storage.s3.meta import info_from_headers, info_headers

log = Logger()

# "." is not in the file id alphabet: never listed as a file.
PROBE_NAME = "httpupload-probe."
PROBE_BODY = b"httpupload start-up probe\n"
_OK = range(200, 300)
# Codes that point at one setting.
_KEY_OF_CODE = {
    "NoSuchBucket": "bucket",
    "InvalidBucketName": "bucket",
    "InvalidAccessKeyId": "access_key_id",
    "SignatureDoesNotMatch": "secret_access_key",
    "AuthorizationHeaderMalformed": "region",
    "PermanentRedirect": "region",
}

CreateOnly = Literal["honoured", "ignored", "refused"]


@dataclass(frozen=True)
class StoreCapabilities:
    """What the probe found the store does."""

    # x-amz-meta-* written with an object come back unchanged on a HEAD.
    keeps_metadata: bool
    # A copy onto itself with x-amz-metadata-directive: REPLACE sets new metadata.
    replaces_metadata: bool
    # If-None-Match: * on PutObject: a second create fails ("honoured"), the
    # second write wins ("ignored"), or the header is refused outright.
    create_only: CreateOnly


def _probe_info(file_id: str, tag: str) -> FileInfo:
    """Info exercising every encoding s3meta uses (non-ASCII name, parameters)."""
    return FileInfo(
        file_id=file_id,
        filename=f"probe {tag} é ü.txt",
        size=len(PROBE_BODY),
        content_type="text/plain; charset=utf-8",
        sha256=secrets.token_hex(32),
        created=1700000000.25,
    )


def _failed(client: S3Client, error: S3Error) -> ConfigError:
    name = _KEY_OF_CODE.get(error.code)
    key = f"[storage.s3] {name}" if name else "[storage.s3]"
    return ConfigError(
        key,
        f"bucket {client.settings.bucket!r} refused the start-up probe's "
        f"write: {error}",
    )


class _Probe:
    def __init__(self, client: S3Client) -> None:
        self.client = client
        self.key = client.settings.prefix + PROBE_NAME + secrets.token_hex(8)
        self.file_id = self.key[len(client.settings.prefix) :]

    def send(
        self, method: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, Headers, bytes]:
        try:
            return self.client.call_blocking(
                method, self.key, headers=headers, body=body
            )
        except OSError as e:
            where = self.client.settings.endpoint or "AWS"
            raise ConfigError(
                "[storage.s3] endpoint", f"cannot reach {where}: {e}"
            ) from None

    def put(self, info: FileInfo, *, create_only: bool) -> tuple[int, bytes]:
        headers = info_headers(info)
        if create_only:
            headers["If-None-Match"] = "*"
        status, _, data = self.send("PUT", headers, PROBE_BODY)
        return status, data

    def reads_back(self, info: FileInfo) -> bool:
        status, headers, data = self.send("HEAD")
        if status not in _OK:
            raise _failed(self.client, error_of(status, data))
        # The store's own Content-Length (a HEAD) is the size info_from_headers sees.
        return info_from_headers(self.file_id, headers) == info

    def copy_onto_itself(self, info: FileInfo) -> bool:
        bucket = self.client.settings.bucket
        headers = {
            **info_headers(info),
            "x-amz-copy-source": quote(f"/{bucket}/{self.key}", safe="/~"),
            "x-amz-metadata-directive": "REPLACE",
        }
        status, _, data = self.send("PUT", headers)
        if status not in _OK:
            return False
        # S3 may answer 200 and put the error in the body.
        try:
            if data.strip() and xml_children(data).tag == "Error":
                return False
        except Exception:
            return False
        return True

    def run(self) -> StoreCapabilities:
        first = _probe_info(self.file_id, "1")
        created = False
        try:
            create_only: CreateOnly = "honoured"
            status, _ = self.put(first, create_only=True)
            if status not in _OK:
                # Is it the condition that is refused, or any write?
                plain, plain_data = self.put(first, create_only=False)
                if plain not in _OK:
                    raise _failed(self.client, error_of(plain, plain_data))
                create_only = "refused"
            created = True
            keeps_metadata = self.reads_back(first)
            if create_only == "honoured":
                again, _ = self.put(_probe_info(self.file_id, "2"), create_only=True)
                # Any refusal leaves the object as it was; only a 2xx replaced it.
                create_only = "ignored" if again in _OK else "honoured"
            second = dataclasses.replace(first, filename="probe copied ø.txt")
            replaces = self.copy_onto_itself(second) and self.reads_back(second)
            return StoreCapabilities(keeps_metadata, replaces, create_only)
        finally:
            if created:
                self._delete()

    def _delete(self) -> None:
        try:
            status, _, data = self.send("DELETE")
        except ConfigError as e:
            log.warn(
                "Could not delete the probe object {key}: {error}",
                key=self.key,
                error=e,
            )
            return
        if status not in _OK and status != 404:
            log.warn(
                "Could not delete the probe object {key}: {error}",
                key=self.key,
                error=error_of(status, data),
            )


def probe_store(client: S3Client) -> StoreCapabilities:
    """Write, read back and delete one object; what the store does (blocking).

    ``ConfigError`` naming the setting when the store cannot be reached or
    refuses a plain write (no such bucket, wrong keys).
    """
    client.start_blocking()
    return _Probe(client).run()


def check_store(
    client: S3Client, *, largest_file: int | None = None
) -> StoreCapabilities:
    """Probe the store and refuse what would lose uploads (blocking).

    Proxy mode needs metadata kept and conditional PUTs at least accepted;
    metadata replaced by a copy only when a file can reach ``part_size``
    (``largest_file``: the largest upload the service grants, if known).  A
    store that ignores ``If-None-Match`` is logged as a warning.  Direct
    mode uses neither (clients PUT with presigned URLs): only the write is
    checked.  ``ConfigError`` (one line) for anything that stops start-up.
    """
    capabilities = probe_store(client)
    settings = client.settings
    if settings.mode == "direct":
        return capabilities
    if not capabilities.keeps_metadata:
        raise ConfigError(
            "[storage.s3]",
            "the object store drops user metadata (x-amz-meta-* headers are not "
            "read back as written), where every file keeps its name, type and "
            "digest: every upload would get 201 and every download 404; use a "
            "store that keeps user metadata",
        )
    if capabilities.create_only == "refused":
        raise ConfigError(
            "[storage.s3]",
            "the object store refuses conditional writes (PUT with If-None-Match: "
            "*), which every upload's commit sends: every upload would fail; use "
            "a store that accepts them",
        )
    multipart = largest_file is None or largest_file >= settings.part_size
    if multipart and not capabilities.replaces_metadata:
        raise ConfigError(
            "[storage.s3]",
            "the object store does not replace metadata by a copy onto itself "
            "(x-amz-metadata-directive: REPLACE), which gives multipart uploads "
            f"their info: files of part_size ({settings.part_size} bytes) or more "
            "would get 201 and then 404; raise [storage.s3] part_size above "
            "[limits] max_file_size, or use a store that can",
        )
    if capabilities.create_only == "ignored":
        log.warn(
            "The object store ignores conditional writes (If-None-Match: *): it "
            "does not keep a stored file from being replaced. Only the record "
            "check before any byte goes to the store refuses a second PUT of a "
            "used slot; were it bypassed (another process writing with the "
            "service's keys, a bug), a stored file could change under its ETag "
            "and the immutable caching of its downloads"
        )
    return capabilities
