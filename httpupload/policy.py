"""Who may ask for a slot, and how large a file may be."""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID

from httpupload.errors import FileTooLarge, NotAllowed


class SlotPolicy:
    """The rules a slot request must pass before a slot is minted."""

    def __init__(self, max_file_size: int, domains: tuple[str, ...]) -> None:
        self.max_file_size = max_file_size
        self.domains = frozenset(d.lower() for d in domains)

    def check_requester(self, requester: JID | None) -> str:
        """The requester's bare JID, if users of its domain may upload here."""
        if requester is None or requester.user is None:
            raise NotAllowed("Only user accounts may request upload slots")
        if requester.host.lower() not in self.domains:
            raise NotAllowed(
                f"Users of {requester.host} may not upload files to this service"
            )
        return requester.userhost()

    def check_size(self, size: int) -> None:
        if size > self.max_file_size:
            raise FileTooLarge(size, self.max_file_size)
