"""A stored file's info as S3 object metadata, and back.

Everything ``FileInfo`` holds travels with the object (``x-amz-meta-*``),
so one HEAD answers ``stat`` and ``open_read``.  Header values are ASCII:
the file name is percent-encoded.  An object created by a multipart upload
carries only a ``partial`` marker until its commit sets the info; such an
object is not (yet) a stored file.  An object without our metadata at all
was put there by someone else, typically a client through a presigned URL
(direct mode): its info is what S3 itself knows.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from twisted.web.http_headers import Headers

from httpupload.storage import FileInfo

META = "x-amz-meta-"
PARTIAL = "httpupload-partial"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def info_headers(info: FileInfo) -> dict[str, str]:
    """The headers that store ``info`` with the object (Content-Type included)."""
    return {
        "Content-Type": info.content_type,
        f"{META}filename": quote(info.filename, safe=""),
        f"{META}content-type": quote(info.content_type, safe=""),
        f"{META}sha256": info.sha256,
        f"{META}created": repr(info.created),
    }


def _header(headers: Headers, name: str) -> str | None:
    values = headers.getRawHeaders(name.encode("ascii"))
    return values[0].decode("latin-1") if values else None


def info_from_headers(file_id: str, headers: Headers) -> FileInfo | None:
    """The info of an object from its HEAD/GET headers; None while partial."""
    if _header(headers, META + PARTIAL) is not None:
        return None
    length = _header(headers, "Content-Length")
    size = int(length) if length and length.isdigit() else 0
    sha256 = _header(headers, META + "sha256")
    if sha256 is not None:
        return FileInfo(
            file_id=file_id,
            filename=unquote(_header(headers, META + "filename") or ""),
            size=size,
            content_type=unquote(
                _header(headers, META + "content-type") or DEFAULT_CONTENT_TYPE
            ),
            sha256=sha256,
            created=float(_header(headers, META + "created") or 0),
        )
    # Not ours (a direct-mode upload): no name, no digest.
    modified = _header(headers, "Last-Modified")
    try:
        created = parsedate_to_datetime(modified).timestamp() if modified else 0.0
    except (TypeError, ValueError):
        created = 0.0
    return FileInfo(
        file_id=file_id,
        filename="",
        size=size,
        content_type=_header(headers, "Content-Type") or DEFAULT_CONTENT_TYPE,
        sha256="",
        created=created,
    )
