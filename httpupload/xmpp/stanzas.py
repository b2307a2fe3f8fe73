"""Reading slot requests and writing slots and errors: XML only, no policy.

Three namespaces are in use by clients:

- ``urn:xmpp:http:upload:0`` (XEP-0363 ≥ 0.3): attributes on ``<request>``,
  ``<put url>`` with ``<header>`` children, ``<get url>``;
- ``urn:xmpp:http:upload`` (XEP-0363 0.2) and
  ``eu:siacs:conversations:http:upload`` (Conversations' original): child
  elements ``<filename>``, ``<size>``, ``<content-type>``; the slot's
  ``<put>`` and ``<get>`` carry the URLs as text, with no headers, so their
  PUT URL carries the token in its query string.
"""

from __future__ import annotations

import re
import time

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from httpupload.dates import InvalidDateTime, format_datetime, parse_datetime
from httpupload.errors import (
    BadSlotRequest,
    FileTooLarge,
    NotAllowed,
    OverLimit,
    PurposeNotAvailable,
    QuotaExceeded,
    QuotaFull,
    SlotRequestError,
    TypeNotAllowed,
)
from httpupload.granting import PURPOSES, SlotRequest
from httpupload.slots import check_content_type, check_new_filename

NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_UPLOAD_LEGACY = "urn:xmpp:http:upload"
NS_UPLOAD_CONVERSATIONS = "eu:siacs:conversations:http:upload"
NAMESPACES = (NS_UPLOAD, NS_UPLOAD_LEGACY, NS_UPLOAD_CONVERSATIONS)
# XEP-0363 1.2: an optional purpose child of <request>.
NS_PURPOSE = "urn:xmpp:http:upload:purpose:0"


# The longest upload purpose name echoed in an error text.
MAX_ECHOED_PURPOSE = 32
# Decimal digits of a size: every 64-bit size, and leading zeros to spare.
MAX_SIZE_DIGITS = 20
_DIGITS = re.compile(r"[0-9]+")


def parse_purpose(request: domish.Element, now: float) -> tuple[str, float | None]:
    """The request's purpose (default ``message``) and ephemeral deadline."""
    found = [c for c in request.elements() if c.uri == NS_PURPOSE]
    if not found:
        return "message", None
    if len(found) > 1:
        raise BadSlotRequest("Give at most one upload purpose")
    purpose = found[0].name
    if purpose not in PURPOSES:
        if len(purpose) > MAX_ECHOED_PURPOSE:
            raise PurposeNotAvailable("Unknown upload purpose")
        raise PurposeNotAvailable(f"Unknown upload purpose: {purpose}")
    if purpose != "ephemeral":
        return purpose, None
    stamp = found[0].getAttribute("expire-before")
    if stamp is None:
        raise BadSlotRequest(
            "The ephemeral purpose needs an expire-before date-time (XEP-0082)"
        )
    try:
        deadline = parse_datetime(stamp)
    except InvalidDateTime as e:
        raise BadSlotRequest(
            f"The expire-before attribute is not an XEP-0082 date-time: {e}"
        ) from None
    if deadline <= now:
        raise BadSlotRequest("The expire-before date-time is already past")
    return purpose, deadline


def parse_size(value: str | None) -> int:
    """The ``size`` attribute: decimal ASCII digits only, bounded, above zero.

    Stricter than the lexical space of the schema's ``xs:positiveInteger``
    (no sign, no surrounding space), and bounded before ``int()``: a number
    of thousands of digits would meet Python's limit on converting them.
    """
    if value is None:
        raise BadSlotRequest("The size attribute is missing")
    if len(value) > MAX_SIZE_DIGITS or not _DIGITS.fullmatch(value):
        raise BadSlotRequest(
            "The size attribute must be a positive integer: "
            f"decimal digits only, at most {MAX_SIZE_DIGITS}"
        )
    size = int(value)
    if size <= 0:
        raise BadSlotRequest("The size attribute must be a positive integer")
    return size


def _child_text(element: domish.Element, name: str) -> str | None:
    for child in element.elements(element.uri, name):
        return str(child)
    return None


def find_request(iq: domish.Element) -> domish.Element | None:
    """The ``<request/>`` child of a slot request IQ, in any upload namespace."""
    child: domish.Element
    for child in iq.elements():
        if child.name == "request" and child.uri in NAMESPACES:
            return child
    return None


def parse_request(request: domish.Element, now: float | None = None) -> SlotRequest:
    """A ``<request/>`` in any of the three namespaces as a ``SlotRequest``."""
    if request.uri == NS_UPLOAD:
        filename = request.getAttribute("filename")
        size = request.getAttribute("size")
        content_type = request.getAttribute("content-type")
    else:
        filename = _child_text(request, "filename")
        size = _child_text(request, "size")
        content_type = _child_text(request, "content-type")
    if filename is None:
        raise BadSlotRequest("The filename attribute is missing")
    purpose, expire_before = parse_purpose(request, time.time() if now is None else now)
    return SlotRequest(
        filename=check_new_filename(filename),
        size=parse_size(size),
        content_type=check_content_type(content_type),
        purpose=purpose,
        expire_before=expire_before,
    )


def slot_element(
    namespace: str, put_url: str, get_url: str, headers: dict[str, str]
) -> domish.Element:
    slot = domish.Element((namespace, "slot"))
    if namespace != NS_UPLOAD:
        slot.addElement("put", content=put_url)
        slot.addElement("get", content=get_url)
        return slot
    put = slot.addElement("put")
    put["url"] = put_url
    for name, value in headers.items():
        header = put.addElement("header", content=value)
        header["name"] = name
    slot.addElement("get")["url"] = get_url
    return slot


def _attr(value: str) -> str:
    return domish.escapeToXml(value, isattrib=1)  # type: ignore[no-any-return]


def slot_result_xml(
    iq: domish.Element,
    namespace: str,
    put_url: str,
    get_url: str,
    headers: dict[str, str],
) -> str:
    """The whole ``<iq type='result'>`` answering ``iq`` with a slot, as text.

    The same XML as ``toResponse(iq, "result")`` holding ``slot_element(...)``,
    written directly: domish's general serializer (namespace and prefix
    bookkeeping for every element) cost more than the rest of a slot request.
    The ``<iq>`` has no ``xmlns``: it is in the stream's default namespace.
    """
    head = "<iq type='result'"
    for ours, theirs in (("to", "from"), ("from", "to"), ("id", "id")):
        value = iq.getAttribute(theirs)
        if value:  # as toResponse: an empty attribute is left out
            head += f" {ours}='{_attr(value)}'"
    if namespace != NS_UPLOAD:
        return (
            f"{head}><slot xmlns='{_attr(namespace)}'>"
            f"<put>{domish.escapeToXml(put_url)}</put>"
            f"<get>{domish.escapeToXml(get_url)}</get></slot></iq>"
        )
    fields = "".join(
        f"<header name='{_attr(name)}'>{domish.escapeToXml(value)}</header>"
        for name, value in headers.items()
    )
    return (
        f"{head}><slot xmlns='{namespace}'><put url='{_attr(put_url)}'>{fields}</put>"
        f"<get url='{_attr(get_url)}'/></slot></iq>"
    )


def file_too_large_element(namespace: str, max_size: int) -> domish.Element:
    element = domish.Element((namespace, "file-too-large"))
    element.addElement("max-file-size", content=str(max_size))
    return element


def stanza_error(error: SlotRequestError, namespace: str = NS_UPLOAD) -> StanzaError:
    """The XEP's error for a refused slot request (§5), in the request's namespace."""
    if isinstance(error, FileTooLarge):
        return StanzaError(
            "not-acceptable",
            "modify",
            error.text,
            appCondition=file_too_large_element(namespace, error.max_size),
        )
    if isinstance(error, QuotaExceeded):
        retry = domish.Element((namespace, "retry"))
        retry["stamp"] = format_datetime(error.retry_at)
        return StanzaError(
            "resource-constraint", "wait", error.text, appCondition=retry
        )
    if isinstance(error, QuotaFull):
        return StanzaError("resource-constraint", "cancel", error.text)
    if isinstance(error, OverLimit | TypeNotAllowed):
        return StanzaError("not-acceptable", "modify", error.text)
    if isinstance(error, PurposeNotAvailable):
        return StanzaError("feature-not-implemented", "cancel", error.text)
    if isinstance(error, NotAllowed):
        return StanzaError("forbidden", "auth", error.text)
    if isinstance(error, BadSlotRequest):
        return StanzaError("bad-request", "modify", error.text)
    return StanzaError("internal-server-error", "wait", error.text)


__all__ = [
    "MAX_ECHOED_PURPOSE",
    "MAX_SIZE_DIGITS",
    "NAMESPACES",
    "NS_PURPOSE",
    "NS_UPLOAD",
    "NS_UPLOAD_CONVERSATIONS",
    "NS_UPLOAD_LEGACY",
    "SlotRequest",
    "file_too_large_element",
    "find_request",
    "format_datetime",
    "parse_purpose",
    "parse_request",
    "parse_size",
    "slot_element",
    "slot_result_xml",
    "stanza_error",
]
