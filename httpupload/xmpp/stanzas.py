"""Reading slot requests and writing slots and errors: XML only, no policy."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from httpupload.errors import (
    BadSlotRequest,
    FileTooLarge,
    NotAllowed,
    SlotRequestError,
)
from httpupload.slots import check_content_type, check_filename

NS_UPLOAD = "urn:xmpp:http:upload:0"


@dataclass(frozen=True)
class SlotRequest:
    filename: str
    size: int
    content_type: str | None


def parse_size(value: str | None) -> int:
    """An xs:positiveInteger, as the XEP's schema gives the ``size`` attribute."""
    if value is None:
        raise BadSlotRequest("The size attribute is missing")
    text = value.strip()
    digits = text[1:] if text.startswith("+") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 30:
        raise BadSlotRequest("The size attribute must be a positive integer")
    size = int(digits)
    if size <= 0:
        raise BadSlotRequest("The size attribute must be a positive integer")
    return size


def parse_request(request: domish.Element) -> SlotRequest:
    """A ``<request xmlns='urn:xmpp:http:upload:0'/>`` as a ``SlotRequest``."""
    filename = request.getAttribute("filename")
    if filename is None:
        raise BadSlotRequest("The filename attribute is missing")
    return SlotRequest(
        filename=check_filename(filename),
        size=parse_size(request.getAttribute("size")),
        content_type=check_content_type(request.getAttribute("content-type")),
    )


def slot_element(put_url: str, get_url: str, headers: dict[str, str]) -> domish.Element:
    slot = domish.Element((NS_UPLOAD, "slot"))
    put = slot.addElement("put")
    put["url"] = put_url
    for name, value in headers.items():
        header = put.addElement("header", content=value)
        header["name"] = name
    slot.addElement("get")["url"] = get_url
    return slot


def file_too_large_element(max_size: int) -> domish.Element:
    element = domish.Element((NS_UPLOAD, "file-too-large"))
    element.addElement("max-file-size", content=str(max_size))
    return element


def stanza_error(error: SlotRequestError) -> StanzaError:
    """The XEP's error for a refused slot request (§5)."""
    if isinstance(error, FileTooLarge):
        return StanzaError(
            "not-acceptable",
            "modify",
            error.text,
            appCondition=file_too_large_element(error.max_size),
        )
    if isinstance(error, NotAllowed):
        return StanzaError("forbidden", "auth", error.text)
    if isinstance(error, BadSlotRequest):
        return StanzaError("bad-request", "modify", error.text)
    return StanzaError("internal-server-error", "wait", error.text)
