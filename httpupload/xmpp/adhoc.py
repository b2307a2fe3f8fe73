"""XEP-0050 ad-hoc commands for owners: list, delete, and usage of their uploads.

wokkel has no ad-hoc module, so this is a small one for three commands:

- ``list``: the requester's files still served (name, size, dates, GET URL)
  as a result form with ``<reported>`` and one ``<item>`` per file;
- ``delete``: a form with one of the requester's files to choose
  (``list-single``, status ``executing``); submitting it deletes the file
  (``owners.Uploads.delete``: storage first, then the record, so its URL
  answers 404 at once);
- ``usage``: bytes held and the sliding window's files and bytes, beside the
  quotas that apply (0: no limit).

Every step is answered in one IQ result.  A form holds at most ``max_files``
files and ``MAX_FORM_BYTES`` of XML (servers drop larger stanzas); the rest
follow in pages, XEP-0050's ``next`` action, each page going on after the
last file shown (``owners.listing_key``), so paging shows each file once.
Names and other stored text are shown through ``owners.display``.  Only
users the ``SlotPolicy`` lets upload may run them (others get
``cancel``/``forbidden``).  Sessions (a paged list, and delete) live in
memory, bound to the requester's full JID and node, and end after
``session_timeout`` seconds of the injected clock without a step.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.iwokkel import IDisco
from wokkel.subprotocols import IQHandlerMixin, XMPPHandler
from zope.interface import implementer

from httpupload.errors import NotAllowed
from httpupload.logs import short_id
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.owners import (
    Listed,
    Uploads,
    UsageReport,
    display,
    listing_key,
    uploaded_at,
)
from httpupload.policy import SlotPolicy
from httpupload.storage import Storage
from httpupload.xmpp.stanzas import format_datetime

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = data_form.NS_X_DATA

COMMAND_SET = f"/iq[@type='set']/command[@xmlns='{NS_COMMANDS}']"
COMMAND_GET = f"/iq[@type='get']/command[@xmlns='{NS_COMMANDS}']"

NODE_LIST = "list"
NODE_DELETE = "delete"
NODE_USAGE = "usage"
COMMANDS = {
    NODE_LIST: "List my uploads",
    NODE_DELETE: "Delete one of my uploads",
    NODE_USAGE: "Show my usage and quotas",
}
ACTIONS = ("execute", "cancel", "prev", "next", "complete")
FILE_FIELD = "file"
#: The most XML one form may take.  Prosody's default c2s stanza limit is
#: 256 KiB, ejabberd's max_stanza_size is often 64 KiB, and a server may
#: relay the stanza to a client with less: 100 names of 255 bytes would be
#: 200 KB.  The command and IQ around the form add a few hundred bytes.
MAX_FORM_BYTES = 16 * 1024
#: Room kept in each form for its title and instructions, which name the page.
_PAGE_TEXT_BYTES = 512
#: At most this much of an attribute a client sent goes into an error text.
MAX_ECHO = 40

log = Logger()


def size_text(n: int) -> str:
    """A byte count for people: ``512 bytes``, ``1.5 MiB``."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _against(used: str, limit: str | None, unit: str = "") -> str:
    """``2 of 5 files``, or ``2 files (no limit)``."""
    return f"{used} of {limit}{unit}" if limit else f"{used}{unit} (no limit)"


def _echo(value: str) -> str:
    """A client's value for an error text: shortened and shown escaped."""
    short = value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    return f"'{display(short)}'"


def command_error(
    condition: str, error_type: str, text: str, specific: str | None = None
) -> StanzaError:
    """A stanza error, with XEP-0050's specific condition when there is one."""
    app = domish.Element((NS_COMMANDS, specific)) if specific else None
    return StanzaError(condition, error_type, text, appCondition=app)


# -- sessions ----------------------------------------------------------------


@dataclass
class Session:
    """One command execution between one requester and this service."""

    id: str
    node: str
    requester: str  # the full JID that started it
    owner: str  # its bare JID, as the policy gave it
    expires: float
    offered: frozenset[str] = frozenset()  # file ids the form offered
    # listing_key of the last file shown; None: that was the last page.
    cursor: tuple[float, str] | None = None


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
        self,
        node: str,
        requester: str,
        owner: str,
        offered: Iterable[str] = (),
        cursor: tuple[float, str] | None = None,
    ) -> Session:
        self._expire()
        mine = [s.id for s in self._open.values() if s.owner == owner]
        for old in mine[: max(0, len(mine) - self.per_owner + 1)]:
            del self._open[old]
        while len(self._open) >= self.limit:
            self._open.popitem(last=False)
        session = Session(
            secrets.token_urlsafe(12),
            node,
            requester,
            owner,
            self.clock.seconds() + self.timeout,
            frozenset(offered),
            cursor,
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
        self._open.pop(session.id, None)


# -- building replies ----------------------------------------------------------

# XEP-0050's schema: <actions/> holds these children in this order.
ACTION_ORDER = ("prev", "next", "complete")


def command_element(
    node: str,
    session_id: str,
    status: str,
    *,
    actions: tuple[str, ...] = (),
    execute: str | None = None,
    notes: Iterable[tuple[str, str]] = (),
    payload: domish.Element | None = None,
) -> domish.Element:
    """A ``<command/>``; ``execute`` (default: the first of ``actions``) is
    the action a bare ``execute`` means."""
    command = domish.Element((NS_COMMANDS, "command"))
    command["node"] = node
    command["sessionid"] = session_id
    command["status"] = status
    if actions:
        element = command.addElement("actions")
        element["execute"] = execute or actions[0]
        for action in sorted(actions, key=ACTION_ORDER.index):
            element.addElement(action)
    for note_type, text in notes:
        command.addElement("note", content=text)["type"] = note_type
    if payload is not None:
        command.addChild(payload)
    return command


def _field(
    var: str, value: str | None = None, label: str | None = None
) -> domish.Element:
    field = domish.Element((NS_DATA, "field"))
    field["var"] = var
    if label is not None:
        field["label"] = label
    if value is not None:
        field.addElement("value", content=value)
    return field


def xml_size(element: domish.Element) -> int:
    """Bytes of ``element`` serialized (UTF-8), as a server counts them."""
    return len(element.toXml().encode("utf-8"))


@dataclass(frozen=True)
class Page:
    """One page of a listing: its files, and where it stands in the whole."""

    files: list[Listed]
    offset: int  # files before this page
    total: int
    more: bool  # files after it

    @property
    def whole(self) -> bool:
        return self.offset == 0 and not self.more

    @property
    def cursor(self) -> tuple[float, str] | None:
        """Where the next page starts; None if this is the last."""
        return listing_key(self.files[-1].record) if self.more else None

    def span(self) -> str:
        return f"{self.offset + 1}-{self.offset + len(self.files)} of {self.total}"


def page_of(
    files: list[Listed],
    cursor: tuple[float, str] | None,
    size: Callable[[Listed], int],
    budget: int,
    max_files: int,
) -> Page:
    """The files after ``cursor`` (all: None) that fit in ``budget`` bytes.

    ``files`` are in ``listing_key`` order; a page holds at least one file
    (one file's entry is a few KiB at most) and at most ``max_files``.
    """
    after = (
        files
        if cursor is None
        else [f for f in files if listing_key(f.record) > cursor]
    )
    shown: list[Listed] = []
    used = 0
    for listed in after:
        cost = size(listed)
        if shown and (used + cost > budget or len(shown) >= max_files):
            break
        shown.append(listed)
        used += cost
    return Page(shown, len(files) - len(after), len(files), len(shown) < len(after))


LIST_COLUMNS = (
    ("name", "Name"),
    ("size", "Size (bytes)"),
    ("date", "Uploaded"),
    ("expires", "Expires"),
    ("url", "URL"),
)


def list_item(listed: Listed) -> domish.Element:
    record = listed.record
    values = {
        "name": display(record.filename),
        "size": str(record.size),
        "date": format_datetime(uploaded_at(record)),
        "expires": "never"
        if record.expires is None
        else format_datetime(record.expires),
        "url": listed.url,
    }
    item = domish.Element((NS_DATA, "item"))
    for var, _ in LIST_COLUMNS:
        item.addChild(_field(var, values[var]))
    return item


def list_form(page: Page) -> domish.Element:
    title = "Your uploads" if page.whole else f"Your uploads, {page.span()}"
    form = data_form.Form("result", title=title).toElement()
    reported = form.addElement("reported")
    for var, label in LIST_COLUMNS:
        reported.addChild(_field(var, label=label))
    for listed in page.files:
        form.addChild(list_item(listed))
    return form


def option_label(record: FileRecord) -> str:
    when = format_datetime(uploaded_at(record)).replace("T", " ").replace("Z", " UTC")
    return f"{display(record.filename)} ({size_text(record.size)}, {when})"


def _option(listed: Listed) -> data_form.Option:
    return data_form.Option(listed.record.file_id, option_label(listed.record))


def option_size(listed: Listed) -> int:
    return xml_size(_option(listed).toElement())


def delete_form(page: Page) -> domish.Element:
    instructions = ["Choose the file to delete. Its URL stops working at once."]
    if not page.whole:
        more = " Next shows the files after these." if page.more else ""
        instructions.append(f"Your files {page.span()}, newest first.{more}")
    form = data_form.Form(
        "form",
        title="Delete an upload",
        instructions=instructions,
        fields=[
            data_form.Field(
                "list-single",
                var=FILE_FIELD,
                label="File",
                # Not required while Next may be chosen without a file.
                required=not page.more,
                options=[_option(f) for f in page.files],
            )
        ],
    )
    element = form.toElement()
    # XEP-0004's schema puts <required/> before the options; wokkel after.
    for field in element.elements(NS_DATA, "field"):
        required = list(field.elements(NS_DATA, "required"))
        for child in required:
            field.children.remove(child)
            field.children.insert(0, child)
    return element


def _budget(empty_form: domish.Element) -> int:
    """Bytes left for entries in a form whose fixed part is ``empty_form``."""
    return MAX_FORM_BYTES - xml_size(empty_form) - _PAGE_TEXT_BYTES


def list_page(
    files: list[Listed], cursor: tuple[float, str] | None, max_files: int
) -> Page:
    empty = list_form(Page([], 0, 0, False))
    return page_of(
        files, cursor, lambda f: xml_size(list_item(f)), _budget(empty), max_files
    )


def delete_page(
    files: list[Listed], cursor: tuple[float, str] | None, max_files: int
) -> Page:
    empty = delete_form(Page([], 0, 0, True))
    return page_of(files, cursor, option_size, _budget(empty), max_files)


USAGE_FIELDS = (
    ("stored-bytes", "Stored now (bytes)"),
    ("stored-limit", "Storage quota (bytes, 0: no limit)"),
    ("window", "Quota window (seconds)"),
    ("window-files", "Files in the window"),
    ("window-files-limit", "Files per window (0: no limit)"),
    ("window-bytes", "Bytes in the window"),
    ("window-bytes-limit", "Bytes per window (0: no limit)"),
)


def usage_values(report: UsageReport) -> dict[str, int]:
    window = report.usage.window
    return {
        "stored-bytes": report.held_bytes,
        "stored-limit": report.total_bytes,
        "window": report.window,
        "window-files": len(window),
        "window-files-limit": report.files_per_window,
        "window-bytes": sum(g.size for g in window),
        "window-bytes-limit": report.bytes_per_window,
    }


def usage_form(report: UsageReport) -> domish.Element:
    values = usage_values(report)
    form = data_form.Form("result", title="Your usage").toElement()
    for var, label in USAGE_FIELDS:
        form.addChild(_field(var, str(values[var]), label))
    return form


def _window_text(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "24 hours" if hours == 24 else f"{hours} hours"
    return f"{seconds} seconds"


def usage_note(report: UsageReport) -> str:
    """One line for people: ``Stored: 1.2 MiB of 100.0 MiB. In the last …``."""
    v = usage_values(report)

    def size_of(limit: str) -> str | None:
        return size_text(v[limit]) if v[limit] else None

    files_limit = v["window-files-limit"]
    stored = _against(size_text(v["stored-bytes"]), size_of("stored-limit"))
    files = _against(
        str(v["window-files"]), str(files_limit) if files_limit else None, " files"
    )
    window_bytes = _against(size_text(v["window-bytes"]), size_of("window-bytes-limit"))
    return (
        f"Stored: {stored}. In the last {_window_text(report.window)}: "
        f"{files}, {window_bytes}."
    )


# -- the handler ---------------------------------------------------------------


@implementer(IDisco)
class AdHocHandler(XMPPHandler, IQHandlerMixin):
    """Owners' ad-hoc commands, and their service discovery."""

    iqHandlers = {COMMAND_SET: "on_command", COMMAND_GET: "on_command_get"}

    def __init__(
        self,
        uploads: Uploads,
        clock: IReactorTime | None = None,
        session_timeout: float = 600.0,
        max_files: int = 100,
    ) -> None:
        super().__init__()
        self.uploads = uploads
        self.policy: SlotPolicy = uploads.policy
        self.sessions = Sessions(clock or uploads.clock, session_timeout)
        # At most this many files in one page of a list or form (and at most
        # MAX_FORM_BYTES of XML): a stanza must stay under servers' limits.
        self.max_files = max_files

    @classmethod
    def build(
        cls,
        metadata: MetadataStore,
        storage: Storage,
        policy: SlotPolicy,
        get_base_url: str,
        clock: IReactorTime,
    ) -> AdHocHandler:
        return cls(Uploads(metadata, storage, policy, get_base_url, clock))

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver(COMMAND_SET, self.handleRequest)
        self.xmlstream.addObserver(COMMAND_GET, self.handleRequest)

    # -- access --------------------------------------------------------------

    def _owner(self, requester: JID | None) -> str:
        try:
            return self.policy.check_requester(requester)
        except NotAllowed as e:
            raise command_error("forbidden", "cancel", e.text) from None

    def _allowed(self, requester: JID | None) -> bool:
        try:
            self.policy.check_requester(requester)
        except NotAllowed:
            return False
        return True

    # -- IQ ------------------------------------------------------------------

    def on_command_get(self, iq: domish.Element) -> None:
        raise command_error("bad-request", "modify", "Commands are IQ set, not get")

    def on_command(self, iq: domish.Element) -> Deferred[domish.Element]:
        return ensureDeferred(self._command(iq))

    async def _command(self, iq: domish.Element) -> domish.Element:
        requester = JID(iq["from"]) if iq.hasAttribute("from") else None
        command = next(iq.elements(NS_COMMANDS, "command"))
        node = command.getAttribute("node")
        action = command.getAttribute("action") or "execute"
        session_id = command.getAttribute("sessionid")
        if not node:
            raise command_error("bad-request", "modify", "The command has no node")
        if action not in ACTIONS:
            raise command_error(
                "bad-request",
                "modify",
                f"Unknown action: {_echo(action)}",
                "malformed-action",
            )
        owner = self._owner(requester)
        if node not in COMMANDS:
            raise command_error(
                "item-not-found", "cancel", f"No command {_echo(node)} here"
            )
        assert requester is not None  # the policy refuses None
        if session_id:
            session = self.sessions.get(session_id, node, requester.full())
            if session is None:
                raise command_error(
                    "bad-request",
                    "modify",
                    "Unknown or expired session",
                    "bad-sessionid",
                )
            return await self._continue(session, action, command)
        if action == "cancel":
            # Nothing was started, so nothing to free.
            return command_element(node, secrets.token_urlsafe(12), "canceled")
        if action == "prev":
            raise command_error(
                "bad-request", "modify", "There is no previous stage", "bad-action"
            )
        if node == NODE_LIST:
            return await self._list(requester.full(), owner)
        if node == NODE_USAGE:
            return await self._usage(owner)
        return await self._delete_form(requester.full(), owner)

    async def _list(
        self, requester: str, owner: str, session: Session | None = None
    ) -> domish.Element:
        """The first page of the owner's files, or the one after ``session``'s."""
        files = await self.uploads.list(owner)
        cursor = session.cursor if session is not None else None
        page = list_page(files, cursor, self.max_files)
        if session is None and page.more:
            session = self.sessions.start(NODE_LIST, requester, owner)
        session_id = session.id if session is not None else secrets.token_urlsafe(12)
        if not page.files:
            text = "You have no uploads." if cursor is None else "No more uploads."
            if session is not None:
                self.sessions.end(session)
            return command_element(
                NODE_LIST, session_id, "completed", notes=[("info", text)]
            )
        form = list_form(page)
        if session is None:
            return command_element(NODE_LIST, session_id, "completed", payload=form)
        if not page.more:
            self.sessions.end(session)
            return command_element(NODE_LIST, session.id, "completed", payload=form)
        session.cursor = page.cursor
        self.sessions.touch(session)
        return command_element(
            NODE_LIST,
            session.id,
            "executing",
            actions=("next", "complete"),
            execute="next",
            payload=form,
        )

    async def _usage(self, owner: str) -> domish.Element:
        report = await self.uploads.usage(owner)
        return command_element(
            NODE_USAGE,
            secrets.token_urlsafe(12),
            "completed",
            notes=[("info", usage_note(report))],
            payload=usage_form(report),
        )

    async def _delete_form(
        self, requester: str, owner: str, session: Session | None = None
    ) -> domish.Element:
        """The form with the first page of files, or the one after ``session``'s."""
        files = await self.uploads.list(owner)
        cursor = session.cursor if session is not None else None
        page = delete_page(files, cursor, self.max_files)
        if not page.files:
            text = (
                "You have no uploads to delete."
                if cursor is None
                else "No more uploads; nothing was deleted."
            )
            if session is not None:
                self.sessions.end(session)
            session_id = session.id if session else secrets.token_urlsafe(12)
            return command_element(
                NODE_DELETE, session_id, "completed", notes=[("info", text)]
            )
        offered = frozenset(f.record.file_id for f in page.files)
        if session is None:
            session = self.sessions.start(
                NODE_DELETE, requester, owner, offered, page.cursor
            )
        else:
            session.offered, session.cursor = offered, page.cursor
            self.sessions.touch(session)
        return command_element(
            NODE_DELETE,
            session.id,
            "executing",
            actions=("next", "complete") if page.more else ("complete",),
            execute="complete",
            payload=delete_form(page),
        )

    async def _continue(
        self, session: Session, action: str, command: domish.Element
    ) -> domish.Element:
        if action == "cancel":
            self.sessions.end(session)
            return command_element(session.node, session.id, "canceled")
        if action == "prev":
            raise command_error(
                "bad-request", "modify", "There is no previous stage", "bad-action"
            )
        if session.node == NODE_LIST:
            if action == "complete":
                self.sessions.end(session)
                return command_element(session.node, session.id, "completed")
            # execute (whose default is next) and next: the next page.
            return await self._list(session.requester, session.owner, session)
        if action == "next" and session.cursor is not None:
            return await self._delete_form(session.requester, session.owner, session)
        # execute (whose default is complete), complete, and next on the
        # last page: delete the chosen file.
        file_id = _submitted_file(command)
        if file_id not in session.offered:
            raise command_error(
                "bad-request",
                "modify",
                "That is not one of the files offered",
                "bad-payload",
            )
        record = await self.uploads.delete(session.owner, file_id)
        if record is None:
            self.sessions.end(session)
            raise command_error("item-not-found", "cancel", "That file is already gone")
        self.sessions.end(session)
        log.info(
            "{owner} deleted {file_id} ({size} bytes)",
            owner=session.owner,
            file_id=short_id(record.file_id),
            size=record.size,
        )
        return command_element(
            session.node,
            session.id,
            "completed",
            notes=[("info", f"Deleted {display(record.filename)}.")],
        )

    # -- disco ---------------------------------------------------------------

    def getDiscoInfo(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[object]:
        if not nodeIdentifier:
            return [disco.DiscoFeature(NS_COMMANDS)]
        if nodeIdentifier == NS_COMMANDS:
            return [disco.DiscoIdentity("automation", "command-list", "Commands")]
        name = COMMANDS.get(nodeIdentifier)
        if name is None:
            return []
        if not self._allowed(requestor):
            raise StanzaError("forbidden", "cancel", "Not available to you")
        return [
            disco.DiscoIdentity("automation", "command-node", name),
            disco.DiscoFeature(NS_COMMANDS),
            disco.DiscoFeature(NS_DATA),
        ]

    def getDiscoItems(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[object]:
        if nodeIdentifier != NS_COMMANDS or not self._allowed(requestor):
            return []
        return [disco.DiscoItem(target, node, name) for node, name in COMMANDS.items()]


def _submitted_file(command: domish.Element) -> str:
    """The file id of a submitted delete form; ``bad-payload`` if there is none."""
    for element in command.elements(NS_DATA, "x"):
        form = data_form.Form.fromElement(element)
        field = form.fields.get(FILE_FIELD)
        value = field.value if field is not None else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        break
    raise command_error(
        "bad-request", "modify", "Choose the file to delete", "bad-payload"
    )
