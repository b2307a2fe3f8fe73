"""Policy rules: access lists, types, purposes, and quotas with retry stamps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.words.protocols.jabber.jid import JID

from httpupload.config import PurposeConfig, QuotaLimits, QuotasConfig
from httpupload.errors import (
    FileTooLarge,
    NotAllowed,
    OverLimit,
    PurposeNotAvailable,
    QuotaExceeded,
    QuotaFull,
    SlotRequestError,
    TypeNotAllowed,
)
from httpupload.metadata import Grant, Usage
from httpupload.policy import OutOfBounds, SlotPolicy, pending_retry, window_retry

DAY = 86400


def usage(
    now: float,
    grants: Sequence[tuple[float, int]] = (),
    purpose: str = "message",
    held: dict[str, int] | None = None,
    global_bytes: int = 0,
) -> Usage:
    window = tuple(Grant(at, size, purpose) for at, size in grants)
    if held is None:
        held = {purpose: sum(s for _, s in grants)} if grants else {}
    return Usage(now, window, held, global_bytes)


def quota_policy(**user: int) -> SlotPolicy:
    return SlotPolicy(
        10**12,
        ("example.org",),
        quotas=QuotasConfig(window=DAY, user=QuotaLimits(**user)),
    )


# -- who ----------------------------------------------------------------------


def test_access_lists() -> None:
    """Allowed domains and JIDs pass; denied ones never do, deny beats allow."""
    policy = SlotPolicy(
        100,
        ("example.org",),
        allow_jids=("bot@partner.net",),
        deny_domains=("spam.example.org",),
        deny_jids=("mallory@example.org",),
    )
    assert policy.check_requester(JID("romeo@example.org/x")) == "romeo@example.org"
    assert policy.check_requester(JID("Bot@Partner.NET/y")) == "bot@partner.net"
    for who in ("mallory@example.org/z", "eve@other.org", "x@spam.example.org"):
        with pytest.raises(NotAllowed) as refused:
            policy.check_requester(JID(who))
        assert refused.value.text
    with pytest.raises(NotAllowed):
        policy.check_requester(JID("example.org"))


@pytest.mark.parametrize(
    ("allow", "deny", "content_type", "ok"),
    [
        (("*/*",), (), None, True),
        (("image/*",), (), "image/png", True),
        (("image/*",), (), "IMAGE/JPEG; q=1", True),
        (("image/*",), (), "video/mp4", False),
        (("image/*",), (), None, False),  # unknown counts as octet-stream
        (("*/*",), ("application/x-msdownload",), "application/x-msdownload", False),
        (("*/*",), ("image/svg+xml",), "image/png", True),
    ],
)
def test_content_types(
    allow: tuple[str, ...], deny: tuple[str, ...], content_type: str | None, ok: bool
) -> None:
    """Wildcard allow and deny lists decide; a refusal names the type."""
    policy = SlotPolicy(100, ("x",), allow_types=allow, deny_types=deny)
    if ok:
        policy.check_type(content_type)
    else:
        with pytest.raises(TypeNotAllowed, match="not accepted"):
            policy.check_type(content_type)


def test_purposes_and_their_limits() -> None:
    """A disabled purpose is refused; a purpose's size limit applies to it alone."""
    policy = SlotPolicy(
        1000,
        ("x",),
        purposes={
            "message": PurposeConfig(True, 30 * DAY, 0),
            "profile": PurposeConfig(True, 0, 100),
            "permanent": PurposeConfig(False, 0, 0),
            "ephemeral": PurposeConfig(True, DAY, 0),
        },
    )
    policy.check_size(1000, "message")
    with pytest.raises(FileTooLarge) as big:
        policy.check_size(101, "profile")
    assert big.value.max_size == 100
    with pytest.raises(PurposeNotAvailable, match="turned off"):
        policy.purpose_config("permanent")
    assert policy.enabled_purposes() == ["message", "profile", "ephemeral"]
    assert policy.expiry("message", 1000.0, None) == 1000.0 + 30 * DAY
    assert policy.expiry("profile", 1000.0, None) is None
    # Ephemeral: the earlier of the client's deadline and the retention.
    assert policy.expiry("ephemeral", 1000.0, 5000.0) == 5000.0
    assert policy.expiry("ephemeral", 1000.0, 10**9) == 1000.0 + DAY


# -- how much -----------------------------------------------------------------


def test_window_retry_is_exact() -> None:
    """The stamp is when enough old grants leave the window for the new file."""
    limits = QuotaLimits(bytes_per_window=100)
    grants = [
        Grant(1000.0, 40, "message"),
        Grant(2000.0, 40, "message"),
        Grant(3000.0, 20, "message"),
    ]
    assert window_retry(grants, 0, limits, DAY) is None
    assert window_retry(grants[:2], 20, limits, DAY) is None
    assert window_retry(grants, 10, limits, DAY) == 1000.0 + DAY
    assert window_retry(grants, 50, limits, DAY) == 2000.0 + DAY
    assert window_retry(grants, 100, limits, DAY) == 3000.0 + DAY
    files = QuotaLimits(files_per_window=2)
    assert window_retry(grants, 1, files, DAY) == 2000.0 + DAY


def test_quota_exceeded_carries_the_stamp() -> None:
    """A full window: wait/resource-constraint with the exact second it frees."""
    policy = quota_policy(bytes_per_window=100, files_per_window=10)
    now = 5000.0
    with pytest.raises(QuotaExceeded) as refused:
        policy.check_quota(usage(now, [(1000.5, 60), (2000.0, 40)]), 30, "message")
    assert refused.value.retry_at == 1001 + DAY  # rounded up to the second
    assert "per 24 hours" in refused.value.text
    policy.check_quota(usage(now, [(1000.5, 60)]), 40, "message")


def test_waiting_cannot_help() -> None:
    """Over a window or total alone: not-acceptable; total full: no stamp."""
    policy = quota_policy(bytes_per_window=100, total_bytes=500)
    with pytest.raises(OverLimit, match="larger than your upload quota"):
        policy.check_quota(usage(0.0), 101, "message")
    policy = quota_policy(total_bytes=500)
    with pytest.raises(OverLimit, match="storage quota"):
        policy.check_quota(usage(0.0), 501, "message")
    with pytest.raises(QuotaFull, match="delete files"):
        policy.check_quota(usage(0.0, held={"message": 450}), 51, "message")
    policy = SlotPolicy(10**9, ("x",), quotas=QuotasConfig(global_bytes=1000))
    with pytest.raises(QuotaFull, match="storage is full"):
        policy.check_quota(usage(0.0, global_bytes=990), 11, "message")
    with pytest.raises(QuotaFull, match="out of storage"):
        policy.check_free_space(100, 101)
    policy.check_free_space(None, 10**15)


def test_purpose_quota_counts_its_own_grants() -> None:
    """A purpose's window only counts that purpose's uploads."""
    policy = SlotPolicy(
        10**9,
        ("x",),
        quotas=QuotasConfig(window=DAY),
        purposes={
            "message": PurposeConfig(True, 0, 0),
            "profile": PurposeConfig(True, 0, 0, QuotaLimits(files_per_window=1)),
        },
    )
    busy = Usage(10.0, (Grant(1.0, 5, "message"), Grant(2.0, 5, "message")), {}, 0)
    policy.check_quota(busy, 5, "profile")
    one = Usage(10.0, (Grant(3.0, 5, "profile"),), {}, 0)
    with pytest.raises(QuotaExceeded) as refused:
        policy.check_quota(one, 5, "profile")
    assert refused.value.retry_at == 3 + DAY


@given(
    st.lists(st.tuples(st.integers(0, 3 * DAY), st.integers(1, 400)), max_size=60),
    st.integers(1, 1000),
    st.integers(1, 8),
)
def test_no_sequence_exceeds_the_window(
    requests: list[tuple[int, int]], limit: int, max_files: int
) -> None:
    """Granting exactly what the policy allows never puts a window over quota,
    and a refused request is always granted at its stamp, not a second before."""
    policy = quota_policy(bytes_per_window=limit, files_per_window=max_files)
    granted: list[tuple[float, int]] = []

    def window_at(now: float) -> list[tuple[float, int]]:
        return [(t, s) for t, s in granted if t > now - DAY]

    for now, size in sorted(requests):
        try:
            policy.check_quota(usage(now, window_at(now), held={}), size, "message")
        except QuotaExceeded as refused:
            stamp = refused.retry_at
            assert stamp > now
            later = window_at(stamp)
            policy.check_quota(usage(stamp, later, held={}), size, "message")
            with pytest.raises(QuotaExceeded):
                policy.check_quota(
                    usage(stamp - 1, window_at(stamp - 1), held={}), size, "message"
                )
            continue
        except OverLimit:
            assert size > limit
            continue
        granted.append((float(now), size))
        current = window_at(now)
        assert sum(s for _, s in current) <= limit
        assert len(current) <= max_files


def test_unused_slots_leave_the_window_when_they_expire() -> None:
    """A slot not yet used stops counting when its PUT URL expires, so the stamp
    can be that expiry rather than a day after the grant."""
    limits = QuotaLimits(bytes_per_window=100)
    grants = [
        Grant(1000.0, 60, "message"),  # stored: leaves a day later
        Grant(2000.0, 40, "message", slot_expires=2300.0),  # unused
    ]
    assert window_retry(grants, 40, limits, DAY) == 2300.0
    assert window_retry(grants, 70, limits, DAY) == 1000.0 + DAY
    files = QuotaLimits(files_per_window=2)
    assert window_retry(grants, 1, files, DAY) == 2300.0


def test_pending_slots_bound_carries_the_earliest_expiry() -> None:
    """As many unused slots as allowed: wait/resource-constraint with the
    second the earliest expires (the n-L+1st when the bound was lowered)."""
    policy = SlotPolicy(10**9, ("x",), quotas=QuotasConfig(pending_slots=2))
    assert policy.usage_needs("message").held
    policy.check_quota(Usage(0.0, (), {}, 0, (300.5,)), 1, "message")
    with pytest.raises(QuotaExceeded) as refused:
        policy.check_quota(Usage(0.0, (), {}, 0, (300.5, 400.0)), 1, "message")
    assert refused.value.retry_at == 301
    assert refused.value.text == (
        "You have 2 upload slots not yet used (at most 2 at a time); "
        "try again when one expires"
    )
    assert pending_retry((100.0, 200.0, 300.0, 400.0), 2) == 300.0
    assert pending_retry((100.0, 200.0), 0) is None  # 0: no limit
    unbounded = SlotPolicy(10**9, ("x",))
    assert not unbounded.usage_needs("message").held
    unbounded.check_quota(Usage(0.0, (), {}, 0, (1.0,) * 100), 1, "message")


def test_the_later_of_two_stamps_wins() -> None:
    """Both the window and the unused-slot bound full: the stamp is the later
    of the two, and the text names that limit."""
    policy = SlotPolicy(
        10**9,
        ("x",),
        quotas=QuotasConfig(
            window=DAY, user=QuotaLimits(files_per_window=1), pending_slots=1
        ),
    )
    stored = Usage(10.0, (Grant(5.0, 1, "message"),), {}, 0, (300.0,))
    with pytest.raises(QuotaExceeded, match="upload quota") as refused:
        policy.check_quota(stored, 1, "message")
    assert refused.value.retry_at == 5 + DAY
    unused = Usage(
        10.0, (Grant(5.0, 1, "message", slot_expires=9000.0),), {}, 0, (9000.0,)
    )
    with pytest.raises(QuotaExceeded) as refused:  # both free at 9000
        policy.check_quota(unused, 1, "message")
    assert refused.value.retry_at == 9000


@given(
    st.lists(
        st.tuples(st.integers(0, 2 * DAY), st.integers(1, 400), st.booleans()),
        max_size=60,
    ),
    st.integers(1, 1000),
    st.integers(1, 6),
)
def test_no_sequence_exceeds_the_budget_or_the_unused_slots(
    requests: list[tuple[int, int, bool]], limit: int, pending: int
) -> None:
    """Granting what the policy allows, some slots used and some never, never
    puts the window over its bytes nor the owner over its unused slots; a
    refused request is granted at its stamp, not a second before."""
    lifetime = 3600
    policy = SlotPolicy(
        10**9,
        ("x",),
        quotas=QuotasConfig(
            window=DAY, user=QuotaLimits(bytes_per_window=limit), pending_slots=pending
        ),
    )
    granted: list[tuple[float, int, bool]] = []  # (at, size, used)

    def at(now: float) -> Usage:
        window = tuple(
            Grant(t, s, "message", None if used else t + lifetime)
            for t, s, used in granted
            if t > now - DAY and (used or t + lifetime > now)
        )
        unused = sorted(
            t + lifetime for t, _, used in granted if not used and t + lifetime > now
        )
        return Usage(now, window, {}, 0, tuple(unused))

    for now, size, used in sorted(requests):
        try:
            policy.check_quota(at(now), size, "message")
        except QuotaExceeded as refused:
            stamp = refused.retry_at
            assert stamp > now
            policy.check_quota(at(stamp), size, "message")
            with pytest.raises(QuotaExceeded):
                policy.check_quota(at(stamp - 1), size, "message")
            continue
        except OverLimit:
            assert size > limit
            continue
        granted.append((float(now), size, used))
        current = at(now)
        assert sum(g.size for g in current.window) <= limit
        assert len(current.pending) <= pending


LIMITS = st.builds(
    QuotaLimits,
    bytes_per_window=st.sampled_from([0, 1, 50, 100, 400]),
    files_per_window=st.integers(0, 4),
    total_bytes=st.sampled_from([0, 1, 80, 300]),
)
PURPOSE_NAMES = st.sampled_from(["message", "profile"])
USAGES = st.builds(
    Usage,
    now=st.just(float(DAY)),
    window=st.lists(
        st.builds(
            Grant,
            at=st.floats(1, DAY),
            size=st.integers(1, 200),
            purpose=PURPOSE_NAMES,
            slot_expires=st.one_of(st.none(), st.floats(DAY + 1, 2 * DAY)),
        ),
        max_size=6,
    ).map(tuple),
    held=st.dictionaries(PURPOSE_NAMES, st.integers(0, 400)),
    global_bytes=st.integers(0, 1000),
    pending=st.lists(st.floats(DAY + 1, 2 * DAY), max_size=4).map(
        lambda p: tuple(sorted(p))
    ),
)


@given(
    LIMITS,
    LIMITS,
    st.sampled_from([0, 500, 1000]),
    st.integers(0, 3),
    USAGES,
    st.integers(1, 500),
    PURPOSE_NAMES,
)
def test_quota_bound_admits_exactly_what_check_quota_allows(
    user: QuotaLimits,
    profile: QuotaLimits,
    global_bytes: int,
    pending_slots: int,
    held: Usage,
    size: int,
    purpose: str,
) -> None:
    """The numbers the store compares (QuotaBound) admit a usage exactly when
    check_quota, the rule, lets the request through."""
    policy = SlotPolicy(
        10**9,
        ("x",),
        quotas=QuotasConfig(
            window=DAY,
            user=user,
            global_bytes=global_bytes,
            pending_slots=pending_slots,
        ),
        purposes={
            "message": PurposeConfig(True, 0, 0),
            "profile": PurposeConfig(True, 0, 0, profile),
        },
    )
    try:
        policy.check_quota(held, size, purpose)
    except SlotRequestError:
        allowed = False
    else:
        allowed = True
    bound = policy.quota_bound(size, purpose)
    assert bound.admits(held) is allowed
    if not allowed:
        with pytest.raises(OutOfBounds) as out:
            bound(held)
        assert out.value.usage is held
