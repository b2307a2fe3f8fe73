"""An XEP-0363 client for Twisted: find the upload service, get a slot, PUT a file.

Works over any connected wokkel stream: a client's or a component's
``StreamManager`` (or an ``XMPPHandler`` attached to one), anything with
wokkel's ``request(generic.Request) -> Deferred``. It speaks
``urn:xmpp:http:upload:0`` to any compliant service (httpupload, Prosody's
``mod_http_file_share``, ejabberd's ``mod_http_upload``, …)::

    from httpupload.client import UploadClient, UploadError

    uploader = UploadClient(reactor, stream_manager)
    try:
        url = await uploader.upload("photo.jpg", domain="example.org")
    except UploadError as e:
        print(e)

The file is streamed from disk (never read whole), a progress callback sees
each chunk, a file over the service's advertised ``max-file-size`` is refused
before the slot request, and every XMPP or HTTP failure arrives as one
``UploadError`` subclass carrying the server's own text.

The package, along its seams: ``errors`` (the failures), ``parsing`` (the
service's answers), ``transfer`` (the PUT), ``api`` (``UploadClient``),
``xep`` (the XEP's vocabulary), ``login`` (a client stream with STARTTLS and
SASL), ``arguments`` and ``send`` (the ``httpupload-send`` command).
Importing it loads no server module (``tests/test_exports.py``); ``login``,
``arguments`` and ``send`` load only when imported.
"""

from httpupload.client.api import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_TIMEOUT,
    IQRequester,
    UploadClient,
    upload_file,
)
from httpupload.client.errors import (
    FileTooLarge,
    HttpError,
    NoAnswer,
    NoUploadService,
    ProtocolError,
    SlotRefused,
    TransferFailed,
    UploadError,
    XmppError,
)
from httpupload.client.parsing import Slot, UploadService, parse_slot, slot_headers
from httpupload.client.transfer import (
    CHUNK_SIZE,
    MAX_ERROR_BODY,
    FileProducer,
    ProgressCallback,
)
from httpupload.client.xep import ALLOWED_HEADERS, NS_UPLOAD

__all__ = [
    "ALLOWED_HEADERS",
    "CHUNK_SIZE",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MAX_ERROR_BODY",
    "NS_UPLOAD",
    "FileProducer",
    "FileTooLarge",
    "HttpError",
    "IQRequester",
    "NoAnswer",
    "NoUploadService",
    "ProgressCallback",
    "ProtocolError",
    "Slot",
    "SlotRefused",
    "TransferFailed",
    "UploadClient",
    "UploadError",
    "UploadService",
    "XmppError",
    "parse_slot",
    "slot_headers",
    "upload_file",
]
