"""XEP-0050 ad-hoc commands: the machinery, for our commands and an embedder's.

wokkel has no ad-hoc module, so this is a small one.  ``CommandsHandler``
answers ``<command/>`` IQs and the commands' service discovery for the
``Command`` objects registered with it; a command only builds its answers.
The handler does, once for all commands, what XEP-0050 asks of every one:

- the flow: ``execute`` (the default), ``next``, ``prev``, ``complete`` and
  ``cancel``; an unknown action is ``malformed-action``, ``prev`` where no
  stage came before is ``bad-action``, and ``cancel`` ends the session;
- sessions (``Sessions``): in memory, bound to the requester's full JID and
  the node, ended after ``timeout`` seconds of the injected clock without a
  step, bounded per user and in all; an unknown one is ``bad-sessionid``;
- access: ``authorize`` maps the requester to the user a command acts for
  (a bare JID) or raises ``NotAllowed``, which becomes ``cancel/forbidden``;
  users refused see no command items and are refused each node's info;
- errors: one seam, ``command_error`` (a ``StanzaError`` with XEP-0050's
  specific condition), raised by the handler or by a command; a client's
  value is echoed short and escaped (``echo``).

An embedder's command, in a few lines::

    class Hello(Command):
        node, name = "hello", "Say hello"

        async def start(self, request: CommandRequest) -> domish.Element:
            return command_element(self.node, new_session_id(), "completed",
                                   notes=[("info", f"Hello {request.user}")])

    handler = CommandsHandler(reactor, [Hello()])
    handler.setHandlerParent(component)   # beside a wokkel DiscoHandler

One handler per stream (two would both answer every command IQ): beside the
owner commands, ``register`` more on the service's ``AdHocHandler``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import data_form, disco
from wokkel.iwokkel import IDisco
from wokkel.subprotocols import IQHandlerMixin, XMPPHandler
from zope.interface import implementer

from httpupload._units import display
from httpupload.errors import NotAllowed
from httpupload.xmpp.command_sessions import Session, Sessions, new_session_id

__all__ = [
    "ACTIONS",
    "ACTION_ORDER",
    "MAX_ECHO",
    "NS_COMMANDS",
    "NS_DATA",
    "Command",
    "CommandRequest",
    "CommandsHandler",
    "Session",
    "Sessions",
    "any_user",
    "command_element",
    "command_error",
    "echo",
    "new_session_id",
]

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = data_form.NS_X_DATA

COMMAND_SET = f"/iq[@type='set']/command[@xmlns='{NS_COMMANDS}']"
COMMAND_GET = f"/iq[@type='get']/command[@xmlns='{NS_COMMANDS}']"

ACTIONS = ("execute", "cancel", "prev", "next", "complete")
# XEP-0050's schema: <actions/> holds these children in this order.
ACTION_ORDER = ("prev", "next", "complete")
#: At most this much of an attribute a client sent goes into an error text.
MAX_ECHO = 40


def echo(value: str) -> str:
    """A client's value for an error text: shortened and shown escaped."""
    short = value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    return f"'{display(short)}'"


def command_error(
    condition: str, error_type: str, text: str, specific: str | None = None
) -> StanzaError:
    """A stanza error, with XEP-0050's specific condition when there is one."""
    app = domish.Element((NS_COMMANDS, specific)) if specific else None
    return StanzaError(condition, error_type, text, appCondition=app)


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
    """A ``<command/>`` answer; ``execute`` (default: the first of ``actions``)
    is the action a bare ``execute`` means."""
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


# -- commands ------------------------------------------------------------------


@dataclass(frozen=True)
class CommandRequest:
    """One ``<command/>`` a user sent, as a command sees it."""

    requester: JID  # the full JID
    user: str  # the bare JID ``authorize`` gave
    node: str
    action: str  # one of ACTIONS; ``execute`` when none was given
    element: domish.Element  # the <command/> itself
    sessions: Sessions

    def submitted(self) -> data_form.Form | None:
        """The first data form in the command (a submitted form), if any."""
        for element in self.element.elements(NS_DATA, "x"):
            return data_form.Form.fromElement(element)
        return None


class Command:
    """One command node: its answers to a first step and to later ones.

    ``start`` answers an execution with no session; ``resume`` answers a
    step in a session ``start`` opened (``next``, ``complete`` or
    ``execute``: the handler has dealt with ``cancel`` and ``prev``).
    """

    node: str = ""
    name: str = ""

    async def start(self, request: CommandRequest) -> domish.Element:
        """The answer to a first step (no session yet)."""
        raise NotImplementedError

    async def resume(self, request: CommandRequest, session: Session) -> domish.Element:
        """The answer to a later step; a one-stage command opens no session."""
        raise command_error(
            "bad-request", "modify", "Unknown or expired session", "bad-sessionid"
        )


def any_user(requester: JID | None) -> str:
    """The default ``authorize``: anyone with a user JID, as their bare JID."""
    if requester is None or not requester.user:
        raise NotAllowed("Commands are for users")
    return str(requester.userhost())


# -- the handler ---------------------------------------------------------------


@implementer(IDisco)
class CommandsHandler(XMPPHandler, IQHandlerMixin):
    """XEP-0050 for the registered commands: IQs and service discovery."""

    iqHandlers = {COMMAND_SET: "on_command", COMMAND_GET: "on_command_get"}

    def __init__(
        self,
        clock: IReactorTime,
        commands: Iterable[Command] = (),
        *,
        authorize: Callable[[JID | None], str] = any_user,
        session_timeout: float = 600.0,
    ) -> None:
        super().__init__()
        self.authorize = authorize
        self.sessions = Sessions(clock, session_timeout)
        # The command node registry, in the order disco lists them.
        self.commands: dict[str, Command] = {}
        for command in commands:
            self.register(command)

    def register(self, command: Command) -> None:
        """Offer ``command`` (at its node, which must be new)."""
        if not command.node or command.node in self.commands:
            raise ValueError(f"no node, or a node taken: {command.node!r}")
        self.commands[command.node] = command

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver(COMMAND_SET, self.handleRequest)
        self.xmlstream.addObserver(COMMAND_GET, self.handleRequest)

    # -- access --------------------------------------------------------------

    def _user(self, requester: JID | None) -> str:
        try:
            return self.authorize(requester)
        except NotAllowed as e:
            raise command_error("forbidden", "cancel", e.text) from None

    def _allowed(self, requester: JID | None) -> bool:
        try:
            self.authorize(requester)
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
        element = next(iq.elements(NS_COMMANDS, "command"))
        node = element.getAttribute("node")
        action = element.getAttribute("action") or "execute"
        session_id = element.getAttribute("sessionid")
        if not node:
            raise command_error("bad-request", "modify", "The command has no node")
        if action not in ACTIONS:
            raise command_error(
                "bad-request",
                "modify",
                f"Unknown action: {echo(action)}",
                "malformed-action",
            )
        user = self._user(requester)
        command = self.commands.get(node)
        if command is None:
            raise command_error(
                "item-not-found", "cancel", f"No command {echo(node)} here"
            )
        if requester is None:  # refused by every authorize worth the name
            raise command_error("forbidden", "cancel", "Commands are for users")
        request = CommandRequest(requester, user, node, action, element, self.sessions)
        if session_id:
            session = self.sessions.get(session_id, node, requester.full())
            if session is None:
                raise command_error(
                    "bad-request",
                    "modify",
                    "Unknown or expired session",
                    "bad-sessionid",
                )
            if action == "cancel":
                self.sessions.end(session)
                return command_element(node, session.id, "canceled")
            if action == "prev":
                raise _no_previous_stage()
            return await command.resume(request, session)
        if action == "cancel":
            # Nothing was started, so nothing to free.
            return command_element(node, new_session_id(), "canceled")
        if action == "prev":
            raise _no_previous_stage()
        return await command.start(request)

    # -- disco ---------------------------------------------------------------

    def getDiscoInfo(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[object]:
        if not nodeIdentifier:
            return [disco.DiscoFeature(NS_COMMANDS)]
        if nodeIdentifier == NS_COMMANDS:
            return [disco.DiscoIdentity("automation", "command-list", "Commands")]
        command = self.commands.get(nodeIdentifier)
        if command is None:
            return []
        if not self._allowed(requestor):
            raise StanzaError("forbidden", "cancel", "Not available to you")
        return [
            disco.DiscoIdentity("automation", "command-node", command.name),
            disco.DiscoFeature(NS_COMMANDS),
            disco.DiscoFeature(NS_DATA),
        ]

    def getDiscoItems(
        self, requestor: JID, target: JID, nodeIdentifier: str = ""
    ) -> list[object]:
        if nodeIdentifier != NS_COMMANDS or not self._allowed(requestor):
            return []
        return [
            disco.DiscoItem(target, node, command.name)
            for node, command in self.commands.items()
        ]


def _no_previous_stage() -> StanzaError:
    return command_error(
        "bad-request", "modify", "There is no previous stage", "bad-action"
    )
