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

Every step is answered in one IQ result.  Only users the ``SlotPolicy``
lets upload may run them (others get ``cancel``/``forbidden``).  Sessions
(only ``delete`` needs one) live in memory, bound to the requester's full JID
and node, and end after ``session_timeout`` seconds of the injected clock.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterable
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
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.owners import Listed, Uploads, UsageReport
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
        self, node: str, requester: str, owner: str, offered: Iterable[str] = ()
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
        )
        self._open[session.id] = session
        return session

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


def command_element(
    node: str,
    session_id: str,
    status: str,
    *,
    actions: tuple[str, ...] = (),
    notes: Iterable[tuple[str, str]] = (),
    payload: domish.Element | None = None,
) -> domish.Element:
    command = domish.Element((NS_COMMANDS, "command"))
    command["node"] = node
    command["sessionid"] = session_id
    command["status"] = status
    if actions:
        element = command.addElement("actions")
        element["execute"] = actions[0]
        for action in actions:
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


LIST_COLUMNS = (
    ("name", "Name"),
    ("size", "Size (bytes)"),
    ("date", "Uploaded"),
    ("expires", "Expires"),
    ("url", "URL"),
)


def _uploaded_at(record: FileRecord) -> float:
    return record.completed_at if record.completed_at is not None else record.created


def list_form(files: list[Listed], total: int) -> domish.Element:
    title = (
        "Your uploads"
        if len(files) == total
        else f"Your newest {len(files)} of {total} uploads"
    )
    form = data_form.Form("result", title=title).toElement()
    reported = form.addElement("reported")
    for var, label in LIST_COLUMNS:
        reported.addChild(_field(var, label=label))
    for listed in files:
        record = listed.record
        values = {
            "name": record.filename,
            "size": str(record.size),
            "date": format_datetime(_uploaded_at(record)),
            "expires": "never"
            if record.expires is None
            else format_datetime(record.expires),
            "url": listed.url,
        }
        item = form.addElement("item")
        for var, _ in LIST_COLUMNS:
            item.addChild(_field(var, values[var]))
    return form


def option_label(record: FileRecord) -> str:
    when = format_datetime(_uploaded_at(record)).replace("T", " ").replace("Z", " UTC")
    return f"{record.filename} ({size_text(record.size)}, {when})"


def delete_form(files: list[Listed], total: int) -> domish.Element:
    instructions = ["Choose the file to delete. Its URL stops working at once."]
    if len(files) < total:
        instructions.append(
            f"Only your newest {len(files)} of {total} files are listed."
        )
    form = data_form.Form(
        "form",
        title="Delete an upload",
        instructions=instructions,
        fields=[
            data_form.Field(
                "list-single",
                var=FILE_FIELD,
                label="File",
                required=True,
                options=[
                    data_form.Option(f.record.file_id, option_label(f.record))
                    for f in files
                ],
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
        # At most this many files in one list or form (the newest): a stanza
        # must stay well under the servers' size limits.
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
                "bad-request", "modify", f"Unknown action: {action}", "malformed-action"
            )
        owner = self._owner(requester)
        if node not in COMMANDS:
            raise command_error("item-not-found", "cancel", f"No command {node!r} here")
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
            return await self._list(owner)
        if node == NODE_USAGE:
            return await self._usage(owner)
        return await self._delete_form(requester.full(), owner)

    async def _list(self, owner: str) -> domish.Element:
        files = await self.uploads.list(owner)
        session_id = secrets.token_urlsafe(12)
        if not files:
            return command_element(
                NODE_LIST,
                session_id,
                "completed",
                notes=[("info", "You have no uploads.")],
            )
        shown = files[: self.max_files]
        return command_element(
            NODE_LIST, session_id, "completed", payload=list_form(shown, len(files))
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

    async def _delete_form(self, requester: str, owner: str) -> domish.Element:
        files = await self.uploads.list(owner)
        if not files:
            return command_element(
                NODE_DELETE,
                secrets.token_urlsafe(12),
                "completed",
                notes=[("info", "You have no uploads to delete.")],
            )
        shown = files[: self.max_files]
        session = self.sessions.start(
            NODE_DELETE, requester, owner, (f.record.file_id for f in shown)
        )
        return command_element(
            NODE_DELETE,
            session.id,
            "executing",
            actions=("complete",),
            payload=delete_form(shown, len(files)),
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
        # execute, next and complete all finish this one-stage form.
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
            "{owner} deleted {file_id:.6}… ({size} bytes)",
            owner=session.owner,
            file_id=record.file_id,
            size=record.size,
        )
        return command_element(
            session.node,
            session.id,
            "completed",
            notes=[("info", f"Deleted {record.filename}.")],
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
