"""The domain errors, translated to stanzas and HTTP statuses at one seam each.

Nothing below ``xmpp/`` or ``web/`` knows about either protocol: the lower
layers raise these, ``xmpp.stanzas.stanza_error`` and
``web.responses.http_status`` turn them into what goes on the wire.
"""


class HttpUploadError(Exception):
    """Base of every error httpupload raises on purpose."""


class ConfigError(HttpUploadError):
    """A configuration value is missing or wrong; names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class SlotRequestError(HttpUploadError):
    """A slot request that the service refuses."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class BadSlotRequest(SlotRequestError):
    """The request itself is malformed (an attribute missing or invalid)."""


class FileTooLarge(SlotRequestError):
    """The announced size is over the service's limit."""

    def __init__(self, size: int, max_size: int) -> None:
        super().__init__(
            f"File too large: {size} bytes. The maximum file size is {max_size} bytes"
        )
        self.size = size
        self.max_size = max_size


class NotAllowed(SlotRequestError):
    """The requester may not upload here."""


class TypeNotAllowed(SlotRequestError):
    """The content type is not one the service takes."""


class PurposeNotAvailable(SlotRequestError):
    """The requested upload purpose is unknown or turned off."""


class OverLimit(SlotRequestError):
    """The file alone is larger than a quota: waiting cannot help."""


class QuotaFull(SlotRequestError):
    """Only deleting files (or more storage) would make room: no retry time."""


class QuotaExceeded(SlotRequestError):
    """A sliding-window quota is used up until ``retry_at`` (Unix time)."""

    def __init__(self, text: str, retry_at: float) -> None:
        super().__init__(text)
        self.retry_at = retry_at


class UploadRefused(HttpUploadError):
    """An HTTP upload that is refused before or after its body arrives."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSlot(UploadRefused):
    """The slot token is missing, tampered, expired or for another URL."""


class LengthMismatch(UploadRefused):
    """The request's Content-Length is not the slot's size."""


class LengthRequired(UploadRefused):
    """The request carries no Content-Length."""


class TypeMismatch(UploadRefused):
    """The request's Content-Type is not the slot's."""


class AlreadyStored(UploadRefused):
    """The slot's file was already uploaded; a slot is used once."""


class IncompleteBody(UploadRefused):
    """The body ended before Content-Length bytes arrived."""


class StorageFull(UploadRefused):
    """The storage backend has no room for the file."""


class StorageUnavailable(UploadRefused):
    """The storage backend cannot be reached or failed (an object store's 5xx)."""


class TooManyUploads(UploadRefused):
    """The client address has as many uploads in flight as it may."""


class ShuttingDown(UploadRefused):
    """The service is draining before it stops; no new uploads."""


class BadUploadRequest(UploadRefused):
    """A request on an upload URL that its protocol does not allow."""


class OffsetMismatch(UploadRefused):
    """An append's ``Upload-Offset`` is not where the partial upload ends."""

    def __init__(self, expected: int, provided: int | None) -> None:
        super().__init__(
            f"Upload-Offset must be {expected}"
            + ("" if provided is None else f", not {provided}")
        )
        self.expected = expected
        self.provided = provided


class AlreadyComplete(UploadRefused):
    """An append to an upload that is complete: nothing more can be added."""


class TooLarge(UploadRefused):
    """An append would take the upload past the slot's size."""


class WrongPatchType(UploadRefused):
    """A PATCH whose Content-Type is not the resumable protocol's."""


class NoLongerAllowed(UploadRefused):
    """The grant's rules, judged again at completion, refuse the upload now."""


class UploadGone(UploadRefused):
    """No upload resource here (never begun, cancelled, or expired)."""


class ProtocolUnsupported(UploadRefused):
    """A tus version other than 1.0.0."""


class StorageError(HttpUploadError):
    """A storage backend could not do what it was asked; nothing HTTP about it.

    Raised by ``httpupload.storage`` (the subclasses below, or this class for
    any other failure: an I/O error, a write the store refused); the web
    layer turns it into a status at its one seam
    (``web.responses.http_status``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageFailed(StorageError):
    """Any other storage failure (an I/O error, a write the store refused)."""


class DuplicateFile(StorageError):
    """A commit of a file id that is stored already: a stored file never changes."""


class NoSpace(StorageError):
    """The backend has no room for the file (a full disk, a store's quota)."""


class StoreDown(StorageError):
    """The backend cannot be reached or failed on its side (an object store's 5xx)."""
