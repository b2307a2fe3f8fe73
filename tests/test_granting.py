"""SlotGranter: one call decides a slot, records it, then hands out its URLs."""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from slot_fakes import THREADS, PendingStore, ThreadedStore, WatchedPolicy
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.jabber.jid import JID

from httpupload.config import QuotaLimits, QuotasConfig
from httpupload.errors import (
    BadSlotRequest,
    FileTooLarge,
    NotAllowed,
    QuotaExceeded,
    QuotaFull,
    SlotRequestError,
)
from httpupload.granting import SlotGrant, SlotGranter, SlotRequest
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.policy import SlotPolicy
from httpupload.slots import TOKEN_PARAMETER, Slot, SlotSigner, SlotUrls

START = 1_767_225_600  # 2026-01-01T00:00:00Z
ROMEO = JID("romeo@montague.tld/garden")
REQUEST = SlotRequest("a.txt", 3, "text/plain")

_sync = SynchronousTestCase()


def granter(
    policy: SlotPolicy | None = None,
    metadata: MemoryMetadataStore | None = None,
    **kw: object,
) -> SlotGranter:
    clock = Clock()
    clock.advance(START)
    return SlotGranter(
        policy or SlotPolicy(1000, ("montague.tld",)),
        SlotSigner(b"k" * 32, clock),
        SlotUrls("https://put.example/", "https://get.example/files/"),
        300,
        metadata=metadata,
        **kw,  # type: ignore[arg-type]
    )


def grant(g: SlotGranter, request: object = REQUEST) -> Deferred[SlotGrant]:
    return ensureDeferred(g.grant(ROMEO, request))  # type: ignore[arg-type]


def refusal(d: Deferred[SlotGrant]) -> SlotRequestError:
    error = _sync.failureResultOf(d, SlotRequestError).value
    assert isinstance(error, SlotRequestError)
    return error


def test_grant_has_the_slots_urls_and_token() -> None:
    """The PUT URL carries the token as ?token=, the slot header as a bearer token."""
    result = _sync.successResultOf(grant(granter()))
    slot = result.slot
    assert (slot.filename, slot.size, slot.owner) == ("a.txt", 3, "romeo@montague.tld")
    put = urlsplit(result.put_url)
    assert result.put_url.startswith(f"https://put.example/{slot.path}?")
    (token,) = parse_qs(put.query)[TOKEN_PARAMETER]
    assert result.put_headers == {"Authorization": f"Bearer {token}"}
    assert result.get_url == f"https://get.example/files/{slot.path}"
    assert result.purpose == "message"


def test_requester_is_judged_before_the_request_is_read() -> None:
    """A stranger is refused without its request being read at all."""
    read: list[float] = []

    def reader(now: float) -> SlotRequest:
        read.append(now)
        raise BadSlotRequest("never read")

    g = granter()
    d = ensureDeferred(g.grant(JID("tybalt@capulet.tld/x"), reader))
    assert isinstance(refusal(d), NotAllowed)
    assert read == []
    assert isinstance(refusal(grant(g, reader)), BadSlotRequest)
    assert read == [START]


def test_size_is_judged_before_anything_is_recorded() -> None:
    """A file over the limit is refused and leaves no record."""
    store = MemoryMetadataStore()
    d = grant(granter(metadata=store), SlotRequest("a.txt", 1001, None))
    assert isinstance(refusal(d), FileTooLarge)
    assert store.records == {}


def test_answer_waits_for_the_record() -> None:
    """Even with no quota to decide, the grant fires only once its record is in
    the store (it no longer counts on the store applying operations in order)."""
    store = PendingStore()
    d = grant(granter(metadata=store))
    assert store.ordered
    _sync.assertNoResult(d)
    assert store.records == {}
    (finish,) = store.pending
    finish()
    result = _sync.successResultOf(d)
    assert result.slot.file_id in store.records


def test_quota_rule_runs_on_the_granting_thread() -> None:
    """The store's thread only compares numbers: SlotPolicy.check_quota, which
    words a refusal, runs on the thread that asked for the slot."""
    policy = WatchedPolicy(
        1000,
        ("montague.tld",),
        quotas=QuotasConfig(window=86400, user=QuotaLimits(files_per_window=1)),
    )
    g = granter(policy, ThreadedStore())
    del THREADS[:]
    _sync.successResultOf(grant(g))
    error = refusal(grant(g))
    assert isinstance(error, QuotaExceeded)
    assert error.retry_at == START + 300  # when the unused slot expires
    assert THREADS == [threading.current_thread()]


def test_full_storage_refuses_before_reserving() -> None:
    """Too little free space: resource-constraint, nothing recorded."""
    store = MemoryMetadataStore()
    policy = SlotPolicy(
        1000, ("montague.tld",), quotas=QuotasConfig(min_free_bytes=100)
    )
    g = granter(policy, store, free_space=lambda: succeed(102))
    assert isinstance(refusal(grant(g)), QuotaFull)
    assert store.records == {}
    g = granter(policy, store, free_space=lambda: succeed(103))
    _sync.successResultOf(grant(g))
    assert len(store.records) == 1


def test_without_a_store_nothing_is_reserved() -> None:
    """A bare embedding (no metadata store) grants with no quotas and no space check."""
    g = granter(free_space=lambda: succeed(0))
    _sync.successResultOf(grant(g))


class Presigned:
    """Direct mode's URLs, as ``httpupload.storage.s3.direct.DirectUrls`` makes them."""

    def __init__(self) -> None:
        self.asked: list[tuple[Slot, int]] = []

    async def urls(self, slot: Slot, lifetime: int) -> tuple[str, str]:
        self.asked.append((slot, lifetime))
        return f"https://s3/{slot.file_id}?sig", f"https://public/{slot.path}"


def test_direct_mode_hands_out_presigned_urls_without_headers() -> None:
    """In S3 direct mode the URLs are the presigned PUT and the public GET,
    and no slot header (the presigned URL binds length and type)."""
    presigned = Presigned()
    store = MemoryMetadataStore()
    result = _sync.successResultOf(grant(granter(metadata=store, presigned=presigned)))
    assert presigned.asked == [(result.slot, 300)]
    assert result.put_url == f"https://s3/{result.slot.file_id}?sig"
    assert result.get_url == f"https://public/{result.slot.path}"
    assert result.put_headers == {}
    assert result.slot.file_id in store.records


@pytest.mark.parametrize("purpose", ["profile", "ephemeral"])
def test_record_says_the_purpose_and_when_it_expires(purpose: str) -> None:
    """The record carries the purpose and the expiry the policy gives it."""
    store = MemoryMetadataStore()
    deadline = START + 600.0 if purpose == "ephemeral" else None
    request = SlotRequest("a.txt", 3, None, purpose, deadline)
    result = _sync.successResultOf(grant(granter(metadata=store), request))
    record = store.records[result.slot.file_id]
    assert (record.purpose, record.expires) == (purpose, deadline)
    assert (record.created, record.slot_expires) == (START, START + 300)
    assert not record.completed
