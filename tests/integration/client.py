"""A synchronous wrapper around slixmpp, a real XMPP client we did not write.

slixmpp is asyncio; the unit tests run under pytest-twisted, which owns the thread's
Twisted reactor. So each ``XmppClient`` has an event loop of its own, never installed
as the thread's current loop, and every public method runs one coroutine to completion
on it. Close the client (or use it as a context manager) so that no socket or task is
left behind: the suite turns ResourceWarnings into errors.

Uploads go through slixmpp's own XEP-0363 plugin (``xep_0363.upload_file``), which
discovers the service itself (disco#items of the user's domain, then disco#info of each
item) and PUTs the file with aiohttp. Downloads use urllib, a second HTTP client.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

__all__ = [
    "UPLOAD_NS",
    "CommandRefusedError",
    "CommandResult",
    "DiscoInfo",
    "DisconnectedError",
    "Slot",
    "SlotRefusedError",
    "XmppClient",
    "XmppClientError",
    "download",
    "poll",
]

UPLOAD_NS = "urn:xmpp:http:upload:0"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"

T = TypeVar("T")


class XmppClientError(Exception):
    """The test client could not connect, log in or get an answer."""


class DisconnectedError(XmppClientError):
    """The stream to the server is gone (before or while waiting for an answer)."""


@dataclass(frozen=True)
class Slot:
    """An upload slot as the service handed it out."""

    put_url: str
    get_url: str
    headers: dict[str, str]


@dataclass
class SlotRefusedError(Exception):
    """The service answered a slot request with an error stanza."""

    error_type: str
    condition: str
    text: str
    #: The value of <file-too-large><max-file-size>, when the error carries one.
    max_file_size: int | None
    #: Local names of the application-specific children in urn:xmpp:http:upload:0.
    upload_elements: list[str] = field(default_factory=list)
    xml: str = ""

    def __str__(self) -> str:
        return (
            f"slot refused: {self.error_type}/{self.condition} {self.text!r} {self.xml}"
        )


@dataclass(frozen=True)
class CommandResult:
    """An XEP-0050 command's answer, as slixmpp's xep_0050/xep_0004 parse it."""

    node: str
    sessionid: str
    status: str
    #: (type, text) of each <note/>.
    notes: list[tuple[str, str]]
    #: Names of the allowed actions (children of <actions/>), and the default.
    actions: list[str]
    default_action: str
    #: The data form, if any: its type ("" without one) and title.
    form_type: str = ""
    title: str = ""
    #: var -> value of the form's fields (forms and single-item results).
    values: dict[str, Any] = field(default_factory=dict)
    #: var -> [(value, label)] of list fields.
    options: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: The <reported/> columns (var, label) and each <item/> as var -> value.
    reported: list[tuple[str, str]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CommandRefusedError(Exception):
    """The service answered an ad-hoc command with an error stanza."""

    error_type: str
    condition: str
    text: str
    #: Local names of the children in http://jabber.org/protocol/commands.
    command_conditions: list[str] = field(default_factory=list)
    xml: str = ""

    def __str__(self) -> str:
        return (
            f"command refused: {self.error_type}/{self.condition} "
            f"{self.command_conditions} {self.text!r} {self.xml}"
        )


@dataclass(frozen=True)
class DiscoInfo:
    """The parts of a disco#info answer the tests look at."""

    jid: str
    identities: set[tuple[str, str]]
    features: set[str]
    #: FORM_TYPE -> {var: [values]} of each XEP-0128 extension form.
    forms: dict[str, dict[str, list[str]]]


def _no_cert_checks() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class XmppClient:
    """A logged-in XMPP client session, driven synchronously."""

    def __init__(
        self,
        jid: str,
        password: str,
        host: str = "127.0.0.1",
        port: int = 5222,
        timeout: float = 20.0,
    ) -> None:
        self.timeout = timeout
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.xmpp = slixmpp.ClientXMPP(
            jid, password, loop=self.loop, ssl_context=_no_cert_checks()
        )
        # STARTTLS on the plain c2s port; slixmpp refuses to log in without TLS.
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_starttls = True
        self.xmpp.enable_plaintext = False
        for plugin in ("xep_0030", "xep_0128", "xep_0363", "xep_0050"):
            self.xmpp.register_plugin(plugin)
        self._connected = False
        #: Set once the stream to the server dropped (or was closed) after login.
        self.disconnected = False
        self._lost: list[asyncio.Future[None]] = []
        self.xmpp.add_event_handler("disconnected", self._on_disconnected)

    def _on_disconnected(self, _event: Any) -> None:
        self.disconnected = True
        lost, self._lost = self._lost, []
        for future in lost:
            if not future.done():
                future.set_result(None)

    @property
    def is_connected(self) -> bool:
        """Logged in and the stream is still up (as far as this client has seen)."""
        return self._connected and not self.disconnected and self.xmpp.is_connected()

    async def _unless_disconnected(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await coro, but raise DisconnectedError as soon as the stream drops."""
        if self.disconnected:
            coro.close()
            raise DisconnectedError("not connected to the server")
        lost: asyncio.Future[None] = self.loop.create_future()
        self._lost.append(lost)
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        waited: set[asyncio.Future[Any]] = {task, lost}
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # run()'s time limit cancelled us: take task along
            task.cancel()
            raise
        finally:
            if lost in self._lost:
                self._lost.remove(lost)
        if task.done():
            lost.cancel()
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise DisconnectedError("the stream to the server dropped before an answer")

    # ---- plumbing

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run one coroutine on this client's loop, with a time limit."""
        limit = self.timeout if timeout is None else timeout
        return self.loop.run_until_complete(asyncio.wait_for(coro, limit))

    def __enter__(self) -> XmppClient:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- session

    def connect(self) -> None:
        """Connect with STARTTLS, authenticate and wait for the session to start."""
        self.run(self._connect())
        self._connected = True

    async def _connect(self) -> None:
        started: asyncio.Future[None] = self.loop.create_future()

        def settle(error: str | None) -> Callable[[Any], None]:
            def handler(_event: Any) -> None:
                if started.done():
                    return
                if error is None:
                    started.set_result(None)
                else:
                    started.set_exception(XmppClientError(f"{error}: {_event!r}"))

            return handler

        self.xmpp.add_event_handler("session_start", settle(None))
        self.xmpp.add_event_handler("failed_all_auth", settle("authentication failed"))
        self.xmpp.connect(self.host, self.port)
        await started

    def close(self) -> None:
        """Log out, close the socket and the event loop."""
        if self.loop.is_closed():
            return
        try:
            if self._connected:
                try:
                    self.run(self._disconnect(), timeout=10)
                except (TimeoutError, OSError):
                    self.xmpp.abort()
            else:
                self.xmpp.cancel_connection_attempt()
                self.xmpp.abort()
            self._drain()
        finally:
            self._connected = False
            self.loop.close()

    async def _disconnect(self) -> None:
        await self.xmpp.disconnect(wait=5)

    def _drain(self) -> None:
        """Cancel whatever slixmpp left scheduled, so the loop closes cleanly."""
        pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(
                asyncio.gather(*pending, return_exceptions=True)
            )
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())

    # ---- discovery

    def disco_items(self, jid: str) -> list[str]:
        """Return the JIDs listed in disco#items of jid."""

        async def items() -> list[str]:
            iq = await self.xmpp.plugin["xep_0030"].get_items(
                jid=slixmpp.JID(jid), timeout=self.timeout
            )
            return [str(item[0]) for item in iq["disco_items"]["items"]]

        return self.run(items())

    def disco_info(self, jid: str) -> DiscoInfo:
        """Return the identities, features and extension forms of jid."""

        async def info() -> DiscoInfo:
            iq = await self.xmpp.plugin["xep_0030"].get_info(
                jid=slixmpp.JID(jid), timeout=self.timeout
            )
            disco = iq["disco_info"]
            forms: dict[str, dict[str, list[str]]] = {}
            for form in disco.iterables:
                values = {
                    var: value if isinstance(value, list) else [str(value)]
                    for var, value in form.get_values().items()
                }
                form_type = (values.get("FORM_TYPE") or [""])[0]
                forms[form_type] = values
            return DiscoInfo(
                jid=str(iq["from"]),
                identities={(ident[0], ident[1]) for ident in disco["identities"]},
                features=set(disco["features"]),
                forms=forms,
            )

        return self.run(info())

    def find_upload_service(self) -> str | None:
        """Let slixmpp's plugin find the upload service of the user's domain."""

        async def find() -> str | None:
            iq = await self.xmpp.plugin["xep_0363"].find_upload_service(
                timeout=self.timeout
            )
            return None if iq is None else str(iq["from"])

        return self.run(find())

    # ---- upload

    def upload(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Upload data with slixmpp's xep_0363.upload_file; return the GET URL.

        The plugin discovers the service on first use (no domain given), checks the
        advertised max-file-size, requests a slot and PUTs the bytes with aiohttp.
        """
        return self.run(
            self.xmpp.plugin["xep_0363"].upload_file(
                filename,
                size=len(data),
                content_type=content_type,
                input_file=io.BytesIO(data),
                timeout=timeout or self.timeout,
            ),
            timeout=timeout,
        )

    def forget_upload_service(self) -> None:
        """Make the next upload() discover the service again."""
        plugin = self.xmpp.plugin["xep_0363"]
        plugin.upload_service = None
        setattr(plugin, "max_file_size", float("+inf"))  # noqa: B010 (slixmpp types it int)
        self.xmpp.plugin["xep_0030"].domain_infos.clear()

    def request_slot(
        self,
        service: str,
        filename: str,
        size: int,
        content_type: str | None = "application/octet-stream",
    ) -> Slot:
        """Request a slot with slixmpp's request_slot; SlotRefusedError if refused.

        XmppClientError if no answer came in time, DisconnectedError (a subclass)
        as soon as the stream to the server drops while waiting.
        """

        async def request() -> Slot:
            try:
                iq = await self.xmpp.plugin["xep_0363"].request_slot(
                    slixmpp.JID(service),
                    filename,
                    size,
                    content_type,
                    timeout=self.timeout,
                )
            except IqError as exc:
                raise _refusal(exc.iq) from None
            except IqTimeout as exc:
                raise XmppClientError(
                    f"no answer from {service} to a slot request"
                ) from exc
            slot = iq["http_upload_slot"]
            return Slot(
                put_url=slot["put"]["url"],
                get_url=slot["get"]["url"],
                headers={h["name"]: h["value"] for h in slot["put"]["headers"]},
            )

        return self.run(self._unless_disconnected(request()))

    def raw_iq(self, to: str, payload: str, iq_type: str = "get") -> ET.Element:
        """Send an IQ with ``payload`` (XML text) as its child; the reply's XML.

        An error reply is returned too (as XML), not raised: callers check it.
        """

        async def send() -> ET.Element:
            iq = self.xmpp.Iq()
            iq["type"] = iq_type
            iq["to"] = to
            iq.append(ET.fromstring(payload))  # noqa: S314 (the test's own XML)
            try:
                reply = await iq.send(timeout=self.timeout)
            except IqError as exc:
                return exc.iq.xml
            except IqTimeout as exc:
                raise XmppClientError(f"no answer from {to} to a raw IQ") from exc
            return reply.xml

        return self.run(self._unless_disconnected(send()))

    # ---- ad-hoc commands (XEP-0050)

    def commands(self, jid: str) -> list[tuple[str, str, str]]:
        """(jid, node, name) of each command jid lists (slixmpp's get_commands)."""

        async def items() -> list[tuple[str, str, str]]:
            iq = await self.xmpp.plugin["xep_0050"].get_commands(
                jid=jid, timeout=self.timeout
            )
            return [
                (str(item[0]), item[1] or "", item[2] or "")
                for item in iq["disco_items"]["items"]
            ]

        return self.run(self._unless_disconnected(items()))

    def command(
        self,
        jid: str,
        node: str,
        action: str = "execute",
        sessionid: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> CommandResult:
        """Send one command step with slixmpp's send_command; its parsed answer.

        ``values`` become a submitted form. CommandRefusedError if the service
        answers with an error.
        """

        async def send() -> CommandResult:
            payload = None
            if values is not None:
                payload = self.xmpp.plugin["xep_0004"].make_form(ftype="submit")
                for var, value in values.items():
                    payload.add_field(var=var, value=value)
            try:
                iq = await self.xmpp.plugin["xep_0050"].send_command(
                    slixmpp.JID(jid),
                    node,
                    action=action,
                    sessionid=sessionid,
                    payload=payload,
                    timeout=self.timeout,
                )
            except IqError as exc:
                raise _command_refusal(exc.iq) from None
            except IqTimeout as exc:
                raise XmppClientError(
                    f"no answer from {jid} to command {node}"
                ) from exc
            return _command_result(iq)

        return self.run(self._unless_disconnected(send()))


def _command_result(iq: Any) -> CommandResult:
    command = iq["command"]
    actions_xml = command.xml.find(f"{{{command.namespace}}}actions")
    result = CommandResult(
        node=command["node"],
        sessionid=command["sessionid"],
        status=command["status"],
        notes=[(t, text or "") for t, text in command["notes"]],
        actions=[]
        if actions_xml is None
        else [a.tag.split("}")[1] for a in actions_xml],
        default_action="" if actions_xml is None else actions_xml.get("execute", ""),
    )
    if command.xml.find("{jabber:x:data}x") is None:
        return result
    form = command["form"]
    fields = form.get_fields()
    return replace(
        result,
        form_type=form["type"],
        title=form["title"],
        values={var: f["value"] for var, f in fields.items()},
        options={
            var: [(o["value"], o["label"]) for o in f["options"]]
            for var, f in fields.items()
            if f["options"]
        },
        reported=[(var, f["label"]) for var, f in form.get_reported().items()],
        items=form.get_items(),
    )


def _command_refusal(iq: Any) -> CommandRefusedError:
    error = iq["error"]
    xml = iq.xml.find("{jabber:client}error")
    specific: list[str] = []
    if xml is not None:
        prefix = "{http://jabber.org/protocol/commands}"
        specific = [c.tag[len(prefix) :] for c in xml if c.tag.startswith(prefix)]
    return CommandRefusedError(
        error_type=error["type"],
        condition=error["condition"],
        text=error["text"],
        command_conditions=specific,
        xml=str(iq),
    )


def poll(attempt: Callable[[], T], timeout: float, interval: float = 0.25) -> T:
    """Call attempt() until it returns without raising; re-raise after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except Exception:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def _refusal(iq: Any) -> SlotRefusedError:
    error = iq["error"]
    xml = iq.xml.find("{jabber:client}error")
    upload_elements: list[str] = []
    max_size: int | None = None
    if xml is not None:
        for child in xml:
            if child.tag.startswith("{" + UPLOAD_NS + "}"):
                upload_elements.append(child.tag.split("}", 1)[1])
        max_el = xml.find(f"{{{UPLOAD_NS}}}file-too-large/{{{UPLOAD_NS}}}max-file-size")
        if max_el is not None and max_el.text:
            max_size = int(max_el.text.strip())
    return SlotRefusedError(
        error_type=error["type"],
        condition=error["condition"],
        text=error["text"],
        max_file_size=max_size,
        upload_elements=upload_elements,
        xml=str(iq),
    )


def download(url: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """GET url with urllib; return status, headers and body (even on 4xx/5xx)."""
    headers = {"User-Agent": "httpupload-tests"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()
