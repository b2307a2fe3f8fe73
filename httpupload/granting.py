"""Granting a slot: every rule, the space, the reservation and the URLs, in one call.

``SlotGranter.grant(requester, request)`` is the whole decision, whoever
asks (the XEP-0363 handler today): it runs the rules of ``SlotPolicy`` in a
fixed order (who, what purpose, what type, what size), mints the slot, checks
the storage's free space, reserves the slot's record in the metadata store
(quotas decided in the same transaction) and builds the URLs.  It answers
only once the record exists, so the slot's PUT always finds it.  A refusal is
a ``SlotRequestError``; the protocol that asked translates it at its own seam
(``httpupload.xmpp.stanzas.stanza_error``).

Nothing here knows XMPP or HTTP, and no rule runs on the store's thread: the
store compares the usage with a ``QuotaBound`` of plain numbers, and a usage
out of bounds comes back to ``SlotPolicy.check_quota`` on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.words.protocols.jabber.jid import JID

from httpupload.metadata import PURPOSES, FileRecord, MetadataStore
from httpupload.policy import OutOfBounds, SlotPolicy
from httpupload.slots import Slot, SlotSigner, SlotUrls

__all__ = [
    "PURPOSES",
    "PresignedUrls",
    "SlotGrant",
    "SlotGranter",
    "SlotRequest",
]


@dataclass(frozen=True)
class SlotRequest:
    """What a client asks for, read from the wire and checked for form."""

    filename: str
    size: int
    content_type: str | None
    purpose: str = "message"
    # For the ephemeral purpose: never serve the file after this (Unix time).
    expire_before: float | None = None


@dataclass(frozen=True)
class SlotGrant:
    """A granted slot: its record is in the store, its URLs are ready."""

    slot: Slot
    purpose: str
    put_url: str
    get_url: str
    # Headers the client sends with its PUT (XEP-0363 ``:0`` slot headers).
    put_headers: dict[str, str]


class PresignedUrls(Protocol):
    """URLs made elsewhere (S3 direct mode: ``storage.s3.direct.DirectUrls``)."""

    async def urls(self, slot: Slot, lifetime: int) -> tuple[str, str]:
        """(PUT URL, GET URL) for ``slot``, the PUT valid for ``lifetime`` s."""
        ...


# A request, or how to read one once the requester has passed: a stranger
# learns nothing of which requests would be taken.
RequestSource = SlotRequest | Callable[[float], SlotRequest]


class SlotGranter:
    """Grants slots: one owner for the rules' order, the reservation and the URLs."""

    def __init__(
        self,
        policy: SlotPolicy,
        signer: SlotSigner,
        urls: SlotUrls,
        slot_lifetime: int,
        metadata: MetadataStore | None = None,
        free_space: Callable[[], Deferred[int | None]] | None = None,
        presigned: PresignedUrls | None = None,
    ) -> None:
        """``metadata`` None (a bare embedding): no records, so no quotas and
        no free-space check; ``presigned``: S3 direct mode's URLs."""
        self.policy = policy
        self.signer = signer
        self.urls = urls
        self.slot_lifetime = slot_lifetime
        self.metadata = metadata
        self.free_space = free_space
        self.presigned = presigned

    async def grant(self, requester: JID | None, request: RequestSource) -> SlotGrant:
        """A slot for ``requester``, or the ``SlotRequestError`` saying why not.

        ``request`` may be a function of the time that reads it (raising
        ``SlotRequestError`` for a malformed one): it is called only after
        the requester is found allowed.
        """
        policy = self.policy
        now = self.signer.clock.seconds()
        owner = policy.check_requester(requester)
        if not isinstance(request, SlotRequest):
            request = request(now)
        policy.purpose_config(request.purpose)
        policy.check_type(request.content_type)
        policy.check_size(request.size, request.purpose)
        slot, token = self.signer.mint(
            request.filename,
            request.size,
            request.content_type,
            owner,
            self.slot_lifetime,
        )
        await self._reserve(slot, request, now)
        if self.presigned is not None:
            put_url, get_url = await self.presigned.urls(slot, self.slot_lifetime)
            # The presigned URL binds Content-Length and Content-Type, which
            # clients send anyway; XEP-0363 allows neither as a slot header.
            return SlotGrant(slot, request.purpose, put_url, get_url, {})
        return SlotGrant(
            slot,
            request.purpose,
            self.urls.put_url(slot, token),
            self.urls.get_url(slot),
            self.urls.put_headers(token),
        )

    async def _reserve(self, slot: Slot, request: SlotRequest, now: float) -> None:
        """Record the slot, reserving its size, if space and quotas allow."""
        if self.metadata is None:
            return
        policy = self.policy
        if self.free_space is not None:
            policy.check_free_space(await self.free_space(), request.size)
        record = FileRecord(
            file_id=slot.file_id,
            owner=slot.owner,
            filename=slot.filename,
            size=slot.size,
            content_type=slot.content_type,
            purpose=request.purpose,
            created=now,
            slot_expires=slot.expires,
            expires=policy.expiry(request.purpose, now, request.expire_before),
        )
        try:
            await self.metadata.reserve(
                record,
                policy.quotas.window,
                policy.quota_bound(request.size, request.purpose),
                policy.usage_needs(request.purpose),
            )
        except OutOfBounds as e:
            policy.check_quota(e.usage, request.size, request.purpose)
            # The bound and the rule disagree: a bug, answered as one.
            raise RuntimeError("QuotaBound refused what check_quota allows") from e
