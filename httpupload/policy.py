"""Who may ask for a slot, for what, how much and for how long.

Pure rules over data: the requester's JID, the request, and a ``Usage``
snapshot from the metadata store.  The rules run on the reactor thread, in
the order ``httpupload.granting`` fixes.  So that concurrent requests cannot
overshoot a quota, the store's transaction tests the usage against a
``QuotaBound``: plain numbers worked out here beforehand, compared there (a
sum and a count per scope, no rule); a usage out of bounds comes back, and
``check_quota`` words the refusal on the reactor thread.

Where waiting helps (a sliding-window limit, or as many
unused slots as one may hold) the refusal carries the earliest moment that,
as things stand, there is room for the request; where only deletions would,
it says so and carries none.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from twisted.words.protocols.jabber.jid import JID

from httpupload._units import human_size
from httpupload.config import (
    AccessConfig,
    Config,
    PurposeConfig,
    QuotaLimits,
    QuotasConfig,
)
from httpupload.errors import (
    FileTooLarge,
    NotAllowed,
    OverLimit,
    PurposeNotAvailable,
    QuotaExceeded,
    QuotaFull,
    TypeNotAllowed,
)
from httpupload.metadata import PURPOSES, Grant, Usage, UsageNeeds
from httpupload.slots import media_type

DEFAULT_TYPE = "application/octet-stream"
# Every purpose, kept forever: when none is configured (a bare embedding).
ANY_PURPOSE = PurposeConfig(True, 0, 0)


def _size(n: int) -> str:
    return human_size(n, "bytes")


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        days = seconds // 86400
        return "24 hours" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours"
    return f"{seconds} seconds"


def window_retry(
    grants: Sequence[Grant], size: int, limits: QuotaLimits, window: float
) -> float | None:
    """When the window, as it stands, has room for one more file of ``size``.

    None if it has room now.  A grant leaves the window ``window`` seconds
    after it was made, or sooner if it is a slot not yet used: when its PUT
    URL expires (``Grant.leaves``).
    """
    when: float | None = None
    leaving = sorted(grants, key=lambda g: g.leaves(window))
    if limits.bytes_per_window:
        excess = sum(g.size for g in grants) + size - limits.bytes_per_window
        freed = 0
        for grant in leaving:
            if excess <= 0:
                break
            freed += grant.size
            if freed >= excess:
                when = grant.leaves(window)
                break
    if limits.files_per_window:
        excess = len(grants) + 1 - limits.files_per_window
        if excess > 0:
            leaves = leaving[excess - 1].leaves(window)
            when = leaves if when is None else max(when, leaves)
    return when


def pending_retry(pending: Sequence[float], limit: int) -> float | None:
    """When the owner, as things stand, may hold one more unused slot.

    None if it may now (or ``limit`` is 0: no limit).  ``pending`` is when
    each of the owner's unused slots expires, earliest first.
    """
    if not limit or len(pending) < limit:
        return None
    return pending[len(pending) - limit]


class OutOfBounds(Exception):
    """A usage with no room for the request: raised inside the store's
    transaction, caught on the reactor thread (never seen past the granter)."""

    def __init__(self, usage: Usage) -> None:
        super().__init__("usage out of the quota bounds")
        self.usage = usage


@dataclass(frozen=True)
class ScopeBound:
    """One scope's room: its window and held bytes, and its window's files."""

    purpose: str | None  # None: everything the owner holds
    window_bytes: int  # 0: no limit (as in ``QuotaLimits``)
    window_files: int
    held_bytes: int


@dataclass(frozen=True)
class QuotaBound:
    """Whether a ``Usage`` leaves room for one request of ``size`` bytes.

    The store calls it inside its reservation's transaction, on the store's
    thread: it compares sums and counts with numbers ``SlotPolicy.quota_bound``
    fixed beforehand, and raises ``OutOfBounds`` (carrying the usage) when
    ``check_quota`` would refuse; it holds no rule of its own.
    """

    size: int
    scopes: tuple[ScopeBound, ...] = ()
    global_bytes: int = 0
    pending_slots: int = 0
    # A limit the size alone breaks: refused whatever the usage, but with the
    # usage (check_quota names the first broken limit, which may depend on it).
    refused: bool = False

    def admits(self, usage: Usage) -> bool:
        if self.refused:
            return False
        size = self.size
        for scope in self.scopes:
            if scope.purpose is None:
                window = usage.window
                held = sum(usage.held.values())
            else:
                window = tuple(g for g in usage.window if g.purpose == scope.purpose)
                held = usage.held.get(scope.purpose, 0)
            if scope.held_bytes and held + size > scope.held_bytes:
                return False
            if (
                scope.window_bytes
                and sum(g.size for g in window) + size > scope.window_bytes
            ):
                return False
            if scope.window_files and len(window) + 1 > scope.window_files:
                return False
        if self.global_bytes and usage.global_bytes + size > self.global_bytes:
            return False
        return not (self.pending_slots and len(usage.pending) >= self.pending_slots)

    def __call__(self, usage: Usage) -> None:
        if not self.admits(usage):
            raise OutOfBounds(usage)


@dataclass(frozen=True)
class SlotPolicy:
    """Every rule a slot request must pass before a slot is minted."""

    max_file_size: int
    domains: tuple[str, ...]
    # The defaults are the config's own (written once, in httpupload.config).
    allow_jids: tuple[str, ...] = AccessConfig.allow_jids
    deny_domains: tuple[str, ...] = AccessConfig.deny_domains
    deny_jids: tuple[str, ...] = AccessConfig.deny_jids
    allow_types: tuple[str, ...] = AccessConfig.allow_types
    deny_types: tuple[str, ...] = AccessConfig.deny_types
    quotas: QuotasConfig = field(default_factory=QuotasConfig)
    purposes: dict[str, PurposeConfig] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> SlotPolicy:
        a = config.access
        return cls(
            config.limits.max_file_size,
            a.domains,
            allow_jids=a.allow_jids,
            deny_domains=a.deny_domains,
            deny_jids=a.deny_jids,
            allow_types=a.allow_types,
            deny_types=a.deny_types,
            quotas=config.quotas,
            purposes=config.purposes,
        )

    def __post_init__(self) -> None:
        lower = {
            name: tuple(v.lower() for v in getattr(self, name))
            for name in ("domains", "allow_jids", "deny_domains", "deny_jids")
        }
        for name, values in lower.items():
            object.__setattr__(self, name, values)

    # -- who -----------------------------------------------------------------

    def check_requester(self, requester: JID | None) -> str:
        """The requester's bare JID, if it may upload here."""
        if requester is None or requester.user is None:
            raise NotAllowed("Only user accounts may request upload slots")
        bare = requester.userhost().lower()
        host = requester.host.lower()
        if bare in self.deny_jids:
            raise NotAllowed(f"{requester.userhost()} may not upload files here")
        if host in self.deny_domains:
            raise NotAllowed(f"Users of {requester.host} may not upload files here")
        if host not in self.domains and bare not in self.allow_jids:
            raise NotAllowed(
                f"Users of {requester.host} may not upload files to this service"
            )
        bare_jid: str = requester.userhost()
        return bare_jid

    # -- what ----------------------------------------------------------------

    def check_size(self, size: int, purpose: str = "message") -> None:
        limit = self.max_file_size
        config = self.purposes.get(purpose)
        if config is not None and config.max_file_size:
            limit = min(limit, config.max_file_size)
        if size > limit:
            raise FileTooLarge(size, limit)

    def check_type(self, content_type: str | None) -> None:
        kind = media_type(content_type) if content_type else DEFAULT_TYPE

        def matches(patterns: Iterable[str]) -> bool:
            return any(fnmatch.fnmatchcase(kind, p) for p in patterns)

        if matches(self.deny_types) or not matches(self.allow_types):
            raise TypeNotAllowed(f"Files of type {kind} are not accepted here")

    def recheck(self, owner: str, size: int, content_type: str, purpose: str) -> None:
        """The grant's rules again, when an upload completes (a resumed upload
        may complete hours after its slot was granted, and the operator may
        have changed the rules meanwhile: the draft's TOCTOU duty).

        Who, what type and what size; the quota needs no second look: the
        slot's reservation has counted its bytes from the grant on.  Raises
        ``SlotRequestError``.
        """
        self.check_requester(JID(owner) if owner else None)
        self.check_type(content_type)
        self.check_size(size, purpose)

    def purpose_config(self, purpose: str) -> PurposeConfig:
        if not self.purposes:
            return ANY_PURPOSE
        config = self.purposes.get(purpose)
        if config is None:
            raise PurposeNotAvailable(f"Unknown upload purpose: {purpose}")
        if not config.enabled:
            raise PurposeNotAvailable(f"Uploads for purpose {purpose} are turned off")
        return config

    def enabled_purposes(self) -> list[str]:
        if not self.purposes:
            return list(PURPOSES)
        return [name for name, c in self.purposes.items() if c.enabled]

    def expiry(
        self, purpose: str, now: float, expire_before: float | None
    ) -> float | None:
        """When a file granted now stops being served; None: never."""
        retention = self.purpose_config(purpose).retention
        expires = now + retention if retention else None
        if expire_before is not None:
            expires = expire_before if expires is None else min(expires, expire_before)
        return expires

    # -- how much ------------------------------------------------------------

    def usage_needs(self, purpose: str) -> UsageNeeds:
        """What ``check_quota`` will read for ``purpose``: the store skips the rest."""
        scopes = [self.quotas.user]
        config = self.purposes.get(purpose)
        if config is not None:
            scopes.append(config.limits)
        return UsageNeeds(
            window=any(s.bytes_per_window or s.files_per_window for s in scopes),
            held=any(s.total_bytes for s in scopes) or bool(self.quotas.pending_slots),
            global_bytes=bool(self.quotas.global_bytes),
        )

    def _scopes(self, purpose: str) -> list[tuple[str | None, QuotaLimits]]:
        """The limits a request for ``purpose`` meets: the user's, the purpose's."""
        scopes: list[tuple[str | None, QuotaLimits]] = [(None, self.quotas.user)]
        config = self.purposes.get(purpose)
        if config is not None:
            scopes.append((purpose, config.limits))
        return scopes

    def quota_bound(self, size: int, purpose: str) -> QuotaBound:
        """The numbers a usage must stay within for ``check_quota`` to pass."""
        scopes = self._scopes(purpose)
        return QuotaBound(
            size=size,
            scopes=tuple(
                ScopeBound(
                    scope, lim.bytes_per_window, lim.files_per_window, lim.total_bytes
                )
                for scope, lim in scopes
                if lim.bytes_per_window or lim.files_per_window or lim.total_bytes
            ),
            global_bytes=self.quotas.global_bytes,
            pending_slots=self.quotas.pending_slots,
            refused=any(
                (lim.bytes_per_window and size > lim.bytes_per_window)
                or (lim.total_bytes and size > lim.total_bytes)
                for _, lim in scopes
            ),
        )

    def check_quota(self, usage: Usage, size: int, purpose: str) -> None:
        """Raise the right refusal if ``size`` more bytes would break a quota."""
        quotas = self.quotas
        config = self.purposes.get(purpose)
        scopes: list[tuple[str, QuotaLimits, int, tuple[Grant, ...]]] = [
            ("your", quotas.user, sum(usage.held.values()), usage.window)
        ]
        if config is not None:
            scopes.append(
                (
                    f"your {purpose}",
                    config.limits,
                    usage.held.get(purpose, 0),
                    tuple(g for g in usage.window if g.purpose == purpose),
                )
            )
        span = _duration(quotas.window)
        for scope, limits, held, _ in scopes:
            if limits.bytes_per_window and size > limits.bytes_per_window:
                raise OverLimit(
                    f"The file ({_size(size)}) is larger than {scope} upload quota "
                    f"of {_size(limits.bytes_per_window)} per {span}"
                )
            if limits.total_bytes and size > limits.total_bytes:
                raise OverLimit(
                    f"The file ({_size(size)}) is larger than {scope} storage quota "
                    f"of {_size(limits.total_bytes)}"
                )
            if limits.total_bytes and held + size > limits.total_bytes:
                raise QuotaFull(
                    f"{scope.capitalize()} storage quota of "
                    f"{_size(limits.total_bytes)} is full ({_size(held)} used); "
                    "delete files to make room"
                )
        if quotas.global_bytes and usage.global_bytes + size > quotas.global_bytes:
            raise QuotaFull("The upload service's storage is full")
        retry: float | None = None
        reason = ""
        for scope, limits, _, grants in scopes:
            when = window_retry(grants, size, limits, quotas.window)
            if when is not None and (retry is None or when > retry):
                retry = when
                parts = []
                if limits.bytes_per_window:
                    parts.append(_size(limits.bytes_per_window))
                if limits.files_per_window:
                    parts.append(f"{limits.files_per_window} files")
                what = " or ".join(parts)
                reason = (
                    f"{scope.capitalize()} upload quota ({what} per {span}) is used up"
                )
        if retry is not None:
            reason += "; try again later"
        when = pending_retry(usage.pending, quotas.pending_slots)
        # On a tie this names the unused slots: using one is the quicker way.
        if when is not None and (retry is None or when >= retry):
            retry = when
            reason = (
                f"You have {len(usage.pending)} upload slots not yet used "
                f"(at most {quotas.pending_slots} at a time); "
                "try again when one expires"
            )
        if retry is not None:
            raise QuotaExceeded(reason, math.ceil(retry))

    def check_free_space(self, free: int | None, size: int) -> None:
        """Refuse up front when the storage cannot hold the file."""
        if free is not None and free - size < self.quotas.min_free_bytes:
            raise QuotaFull("The upload service is out of storage space")
