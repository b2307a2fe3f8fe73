"""Slot requests against a metadata store: quotas, purposes, through the handler.

On ``MemoryMetadataStore``, whose Deferreds have fired when they are
returned: each reply is there as soon as the request is sent, and time is a
``Clock``.  Requests in flight together are held at the store's door
(``GatedStore``) and let in at once, as the store's thread would take them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.xish import domish
from wokkel import disco, generic
from wokkel.test import helpers

from httpupload.config import PurposeConfig, QuotaLimits, QuotasConfig
from httpupload.metadata import ALL_USAGE, FileRecord, Usage, UsageNeeds
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.stanzas import NS_PURPOSE, NS_UPLOAD

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
DAY = 86400
START = 1_767_225_600  # 2026-01-01T00:00:00Z

_sync = SynchronousTestCase()


class GatedStore(MemoryMetadataStore):
    """A memory store whose reservations, once ``close_gate`` is called, wait
    until ``open_gate``: requests in flight together, as on the store's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.gated = False
        self.waiting: list[tuple[Deferred[None], Callable[[], Deferred[None]]]] = []

    def close_gate(self) -> None:
        self.gated = True

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        inner = super().reserve
        if not self.gated:
            return inner(record, window_seconds, check, needs)
        d: Deferred[None] = Deferred()
        self.waiting.append((d, lambda: inner(record, window_seconds, check, needs)))
        return d

    def open_gate(self) -> None:
        """Let every waiting reservation in, in the order they came."""
        self.gated = False
        waiting, self.waiting = self.waiting, []
        for d, run in waiting:
            run().chainDeferred(d)


class Service:
    """The handler set on wokkel's stub stream, over one metadata store."""

    def __init__(
        self, store: MemoryMetadataStore, clock: Clock, policy: SlotPolicy
    ) -> None:
        self.manager = helpers.TestableStreamManager(reactor=clock)
        self.store = store
        self.clock = clock
        for handler in (
            generic.FallbackHandler(),
            disco.DiscoHandler(),
            UploadHandler(
                policy,
                SlotSigner(b"k" * 32, clock),
                "https://u/",
                "https://u/",
                300,
                metadata=store,
            ),
        ):
            handler.setHandlerParent(self.manager)
        self.count = 0

    def send(self, child: domish.Element, sender: str = "romeo@example.org/x") -> str:
        self.count += 1
        iq = domish.Element((None, "iq"))
        iq["type"], iq["id"] = "get", f"q{self.count}"
        iq["from"], iq["to"] = sender, "upload.example.org"
        iq.addChild(child)
        self.manager.stub.send(iq)
        return str(iq["id"])

    def replies(self, *ids: str) -> list[domish.Element]:
        found = {r["id"]: r for r in self.manager.stub.output}
        missing = [i for i in ids if i not in found]
        assert not missing, f"no reply to {missing}"
        return [found[i] for i in ids]

    def ask(self, child: domish.Element, **kw: str) -> domish.Element:
        (reply,) = self.replies(self.send(child, **kw))
        return reply

    def upload(self, size: int) -> None:
        """A slot that gets used: granted, then its file stored."""
        reply = self.ask(request(size))
        assert reply["type"] == "result", reply.toXml()
        file_id = reply.slot.get["url"].split("/")[-2]
        _sync.successResultOf(
            self.store.complete(file_id, "00" * 32, "a/b", self.clock.seconds())
        )


def request(
    size: int, purpose: str | None = None, **purpose_attrs: str
) -> domish.Element:
    element = domish.Element((NS_UPLOAD, "request"))
    element["filename"], element["size"] = "f.bin", str(size)
    if purpose is not None:
        child = element.addElement((NS_PURPOSE, purpose))
        for name, value in purpose_attrs.items():
            child[name.replace("_", "-")] = value
    return element


def condition(reply: domish.Element) -> tuple[str, str]:
    assert reply["type"] == "error", reply.toXml()
    error = reply.error
    name = next(
        c.name for c in error.elements() if c.uri == NS_STANZAS and c.name != "text"
    )
    return error["type"], name


@pytest.fixture
def store() -> GatedStore:
    """A started memory store, its gate open unless a test holds requests."""
    s = GatedStore()
    _sync.successResultOf(s.start())
    return s


def make(store: MemoryMetadataStore, **user: int) -> Service:
    clock = Clock()
    clock.advance(START)
    policy = SlotPolicy(
        10**9,
        ("example.org",),
        quotas=QuotasConfig(window=DAY, user=QuotaLimits(**user)),
        purposes={
            "message": PurposeConfig(True, 30 * DAY, 0),
            "profile": PurposeConfig(True, 0, 1000),
            "permanent": PurposeConfig(False, 0, 0),
            "ephemeral": PurposeConfig(True, 7 * DAY, 0),
        },
    )
    return Service(store, clock, policy)


def test_window_quota_refusal_has_an_exact_retry_stamp(
    store: GatedStore,
) -> None:
    """Once the daily bytes are used, wait/resource-constraint with <retry stamp>."""
    service = make(store, bytes_per_window=100)
    service.upload(60)
    service.clock.advance(3600)
    service.upload(40)
    service.clock.advance(60)
    reply = service.ask(request(30))
    assert condition(reply) == ("wait", "resource-constraint")
    retry = next(reply.error.elements(NS_UPLOAD, "retry"))
    assert retry["stamp"] == "2026-01-02T00:00:00Z"  # the first grant leaves then
    assert reply.request is not None  # the request is echoed
    # A second before the stamp: still refused; at the stamp: granted.
    service.clock.advance(DAY - 3600 - 60 - 1)
    assert condition(service.ask(request(30)))[1] == "resource-constraint"
    service.clock.advance(1)
    assert (service.ask(request(30)))["type"] == "result"


def test_hard_limits_have_no_stamp(store: GatedStore) -> None:
    """Over the window alone: modify/not-acceptable; total full: cancel, no retry."""
    service = make(store, bytes_per_window=100, total_bytes=150)
    reply = service.ask(request(101))
    assert condition(reply) == ("modify", "not-acceptable")
    assert list(reply.error.elements(NS_UPLOAD, "retry")) == []
    service.upload(100)
    service.clock.advance(2 * DAY)
    reply = service.ask(request(60))
    assert condition(reply) == ("cancel", "resource-constraint")
    assert list(reply.error.elements(NS_UPLOAD, "retry")) == []
    assert "delete files" in str(reply.error.text)


def test_concurrent_requests_cannot_overshoot(store: GatedStore) -> None:
    """Ten requests in flight at once for a quota of three files: three slots."""
    service = make(store, files_per_window=3)
    store.close_gate()
    ids = [service.send(request(10)) for _ in range(10)]
    assert service.manager.stub.output == []  # all ten wait for the store
    store.open_gate()
    replies = service.replies(*ids)
    granted = [r for r in replies if r["type"] == "result"]
    assert len(granted) == 3
    assert all(
        condition(r)[1] == "resource-constraint" for r in replies if r not in granted
    )


def test_unused_slots_stop_reserving_when_they_expire(
    store: GatedStore,
) -> None:
    """A slot never uploaded holds room against the total only while it lives."""
    service = make(store, total_bytes=100)
    assert (service.ask(request(100)))["type"] == "result"
    assert condition(service.ask(request(1)))[1] == "resource-constraint"
    service.clock.advance(301)
    assert (service.ask(request(100)))["type"] == "result"


def test_purposes(store: GatedStore) -> None:
    """profile is honoured (no expiry); permanent is off; ephemeral needs a date."""
    service = make(store)
    reply = service.ask(request(500, "profile"))
    assert reply["type"] == "result"
    file_id = reply.slot.get["url"].split("/")[-2]
    record = _sync.successResultOf(store.get(file_id))
    assert record is not None and record.purpose == "profile" and record.expires is None
    assert condition(service.ask(request(1001, "profile")))[1] == "not-acceptable"
    reply = service.ask(request(5, "permanent"))
    assert condition(reply) == ("cancel", "feature-not-implemented")
    assert condition(service.ask(request(5, "ephemeral")))[1] == "bad-request"
    reply = service.ask(request(5, "ephemeral", expire_before="not a date"))
    assert condition(reply)[1] == "bad-request"
    reply = service.ask(request(5, "ephemeral", expire_before="2025-01-01T00:00:00Z"))
    assert condition(reply)[1] == "bad-request"
    reply = service.ask(request(5, "ephemeral", expire_before="2026-01-01T06:00:00Z"))
    assert reply["type"] == "result"
    record = _sync.successResultOf(store.get(reply.slot.get["url"].split("/")[-2]))
    assert record is not None and record.expires == START + 6 * 3600
    reply = service.ask(request(5, "holiday"))
    assert condition(reply)[1] == "feature-not-implemented"
    both = request(5, "profile")
    both.addElement((NS_PURPOSE, "message"))
    assert condition(service.ask(both))[1] == "bad-request"


def test_disco_advertises_enabled_purposes(store: GatedStore) -> None:
    """Each accepted purpose is a feature; a disabled one is not."""
    service = make(store)
    reply = service.ask(domish.Element((disco.NS_DISCO_INFO, "query")))
    features = {f["var"] for f in reply.query.elements(disco.NS_DISCO_INFO, "feature")}
    for purpose in ("message", "profile", "ephemeral"):
        assert f"{NS_PURPOSE}#{purpose}" in features
    assert f"{NS_PURPOSE}#permanent" not in features


def test_counts_survive_a_restart(store: GatedStore) -> None:
    """A restarted service (a new handler on the same records) keeps what the
    window has used: the counts come from the records, not from the handler."""
    service = make(store, files_per_window=1)
    assert (service.ask(request(10)))["type"] == "result"
    service = make(store, files_per_window=1)
    assert condition(service.ask(request(10)))[1] == "resource-constraint"


def default_service(store: MemoryMetadataStore) -> Service:
    """The handler with the policy a config file that sets no quotas gets."""
    from httpupload.config import parse_config

    config = parse_config(
        {
            "component": {"jid": "upload.example.org", "secret": "s"},
            "http": {"public_url": "https://u/"},
            "storage": {"path": "/x"},
            "limits": {"max_file_size": 1000},
        },
        Path("/etc"),
    )
    clock = Clock()
    clock.advance(START)
    return Service(store, clock, SlotPolicy.from_config(config))


def retry_stamp(reply: domish.Element) -> str:
    return next(reply.error.elements(NS_UPLOAD, "retry"))["stamp"]


def test_default_config_bounds_unused_slots(store: GatedStore) -> None:
    """100 requests at once at the largest size under the default config: ten
    granted, the rest wait/resource-constraint until the first slot expires."""
    service = default_service(store)
    store.close_gate()
    ids = [service.send(request(1000)) for _ in range(100)]
    store.open_gate()
    replies = service.replies(*ids)
    granted = [r for r in replies if r["type"] == "result"]
    assert len(granted) == 10
    refused = [r for r in replies if r["type"] == "error"]
    assert {condition(r) for r in refused} == {("wait", "resource-constraint")}
    assert {retry_stamp(r) for r in refused} == {"2026-01-01T00:05:00Z"}
    assert str(refused[0].error.text) == (
        "You have 10 upload slots not yet used (at most 10 at a time); "
        "try again when one expires"
    )
    service.clock.advance(299)
    assert condition(service.ask(request(1)))[1] == "resource-constraint"
    service.clock.advance(1)
    assert (service.ask(request(1000)))["type"] == "result"


def test_default_config_has_a_daily_budget(store: GatedStore) -> None:
    """Under the default config a user uploads 10 x max_file_size a day; the next
    request waits until the first upload leaves the window."""
    service = default_service(store)
    for _ in range(10):
        service.upload(1000)
        service.clock.advance(60)
    reply = service.ask(request(1))
    assert condition(reply) == ("wait", "resource-constraint")
    assert retry_stamp(reply) == "2026-01-02T00:00:00Z"
    assert str(reply.error.text) == (
        "Your upload quota (9.8 KiB per 24 hours) is used up; try again later"
    )
    service.clock.advance(DAY - 600)
    assert (service.ask(request(1000)))["type"] == "result"
