"""XEP-0050 ad-hoc commands for owners: the handler the service runs.

The machinery (flow, sessions, node registry, disco, errors) is
``httpupload.xmpp.commands``; the commands themselves (list, delete, usage)
are ``httpupload.xmpp.owner_commands``; forms paged under a byte bound are
``httpupload.xmpp.paging``.  ``AdHocHandler`` puts them together: the owner
commands, open to the users the ``SlotPolicy`` lets upload (others get
``cancel``/``forbidden``).  The other names are kept here for importers from
before #11.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from httpupload.metadata import MetadataStore
from httpupload.owners import Uploads
from httpupload.policy import SlotPolicy
from httpupload.storage import Storage
from httpupload.xmpp.commands import (
    ACTIONS,
    NS_COMMANDS,
    NS_DATA,
    CommandsHandler,
    Session,
    Sessions,
    command_element,
    command_error,
)
from httpupload.xmpp.owner_commands import (
    FILE_FIELD,
    NODE_DELETE,
    NODE_LIST,
    NODE_USAGE,
    DeleteCommand,
    ListCommand,
    UsageCommand,
    owner_commands,
    size_text,
)
from httpupload.xmpp.paging import MAX_FORM_BYTES, xml_size

__all__ = [
    "ACTIONS",
    "COMMANDS",
    "FILE_FIELD",
    "MAX_FORM_BYTES",
    "NODE_DELETE",
    "NODE_LIST",
    "NODE_USAGE",
    "NS_COMMANDS",
    "NS_DATA",
    "AdHocHandler",
    "Session",
    "Sessions",
    "command_element",
    "command_error",
    "size_text",
    "xml_size",
]

#: The owner commands' nodes and names, in the order disco lists them.
COMMANDS = {c.node: c.name for c in (ListCommand, DeleteCommand, UsageCommand)}


class AdHocHandler(CommandsHandler):
    """Owners' ad-hoc commands, and their service discovery."""

    def __init__(
        self,
        uploads: Uploads,
        clock: IReactorTime | None = None,
        session_timeout: float = 600.0,
        max_files: int = 100,
    ) -> None:
        self.uploads = uploads
        self.policy: SlotPolicy = uploads.policy
        # At most this many files in one page of a list or form (and at most
        # MAX_FORM_BYTES of XML): a stanza must stay under servers' limits.
        self.max_files = max_files
        super().__init__(
            clock or uploads.clock,
            owner_commands(uploads, max_files),
            authorize=self.policy.check_requester,
            session_timeout=session_timeout,
        )

    @classmethod
    def build(
        cls,
        metadata: MetadataStore,
        storage: Storage,
        policy: SlotPolicy,
        get_base_url: str,
        clock: IReactorTime,
    ) -> AdHocHandler:
        """The handler over the service's stores, as ``service.py`` builds it."""
        return cls(Uploads(metadata, storage, policy, get_base_url, clock))
