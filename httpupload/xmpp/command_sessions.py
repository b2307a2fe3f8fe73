"""XEP-0050 command sessions: in memory, bound, and ended by the clock.

A session is one command execution of several steps (a paged listing, a
form and its submission) between one requester (full JID) and one node.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

__all__ = ["Session", "Sessions", "new_session_id"]


def new_session_id() -> str:
    """A fresh, unguessable session id (also for one-stage commands' answers)."""
    return secrets.token_urlsafe(12)


@dataclass
class Session:
    """One command execution between one requester and this service.

    ``state`` is the command's own (what its last form offered, where a
    listing stands); the handler never reads it.
    """

    id: str
    node: str
    requester: str  # the full JID that started it
    owner: str  # its bare JID, as ``authorize`` gave it
    expires: float
    state: Any = None


class Sessions:
    """Open sessions in memory, ended by a timeout on the injected clock.

    All sessions share one timeout, so insertion order is expiry order and
    expired ones are dropped from the front, in constant time per session.
    At most ``per_owner`` sessions per user (all resources together) and
    ``limit`` in all are kept, the oldest going first: clients that never
    finish cannot fill memory.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float = 600.0,
        per_owner: int = 8,
        limit: int = 10000,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.per_owner = per_owner
        self.limit = limit
        self._open: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._open)

    def _expire(self) -> None:
        now = self.clock.seconds()
        while self._open:
            oldest = next(iter(self._open.values()))
            if oldest.expires > now:
                break
            del self._open[oldest.id]

    def start(
        self, node: str, requester: str, owner: str, state: Any = None
    ) -> Session:
        """A new session, making room by ending the oldest if need be."""
        self._expire()
        mine = [s.id for s in self._open.values() if s.owner == owner]
        for old in mine[: max(0, len(mine) - self.per_owner + 1)]:
            del self._open[old]
        while len(self._open) >= self.limit:
            self._open.popitem(last=False)
        session = Session(
            new_session_id(),
            node,
            requester,
            owner,
            self.clock.seconds() + self.timeout,
            state,
        )
        self._open[session.id] = session
        return session

    def touch(self, session: Session) -> None:
        """A step was taken: the timeout starts again (and the order holds)."""
        session.expires = self.clock.seconds() + self.timeout
        self._open.pop(session.id, None)
        self._open[session.id] = session

    def get(self, session_id: str, node: str, requester: str) -> Session | None:
        """The live session of that id, node and requester; None otherwise."""
        self._expire()
        session = self._open.get(session_id)
        if session is None or session.node != node or session.requester != requester:
            return None
        return session

    def end(self, session: Session) -> None:
        """The command is over: forget the session."""
        self._open.pop(session.id, None)
