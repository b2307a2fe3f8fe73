"""XEP-0050 ad-hoc commands: list, delete and usage, in memory.

The handler runs on wokkel's stream stub (``wokkel.test.helpers``) over the
memory metadata store and storage, on a ``Clock``: every reply is sent
before ``send`` returns, and sessions expire as the clock advances.

(Over 400 lines on purpose: one suite for every step, page and error of the
three commands and the machinery under them, sharing one stub service.)
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.threadpool import ThreadPool
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel import disco, generic
from wokkel.iwokkel import IDisco
from wokkel.test import helpers
from zope.interface import implementer
from zope.interface.verify import verifyObject

from httpupload import make_service, parse_config
from httpupload._reactor import IServiceReactor
from httpupload.config import QuotaLimits, QuotasConfig
from httpupload.errors import NotAllowed
from httpupload.metadata import FileRecord
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.owners import Uploads
from httpupload.policy import SlotPolicy
from httpupload.slots import new_file_id, url_path
from httpupload.storage.memory import MemoryStorage
from httpupload.testing import make_harness, result_of, stored_file
from httpupload.xmpp.adhoc import (
    MAX_FORM_BYTES,
    NS_COMMANDS,
    AdHocHandler,
    Sessions,
    size_text,
    xml_size,
)
from httpupload.xmpp.commands import (
    Command,
    CommandRequest,
    CommandsHandler,
    command_element,
    new_session_id,
)

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DATA = "jabber:x:data"
SERVICE = "upload.montague.tld"
ROMEO = "romeo@montague.tld/garden"
JULIET = "juliet@montague.tld/balcony"
OUTSIDER = "tybalt@capulet.tld/street"
GET_BASE = "https://download.montague.tld/files/"
NOW = 1_700_000_000.0
DAY = 86400

T = TypeVar("T")


def done(work: Deferred[T] | Coroutine[Any, Any, T]) -> T:
    """The result of work on the memory stores, which has finished already."""
    return result_of(ensureDeferred(work))


class Service:
    """The component's handlers on wokkel's stream stub, over memory stores."""

    def __init__(
        self,
        store: MemoryMetadataStore,
        storage: MemoryStorage,
        policy: SlotPolicy | None = None,
        *,
        max_files: int = 100,
        handler: CommandsHandler | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = store
        self.storage = storage
        policy = policy or SlotPolicy(
            10_000_000,
            ("montague.tld",),
            quotas=QuotasConfig(
                window=DAY,
                user=QuotaLimits(
                    bytes_per_window=1000, files_per_window=5, total_bytes=5000
                ),
            ),
        )
        self.uploads = Uploads(store, storage, policy, GET_BASE, self.clock)
        self.handler = handler or AdHocHandler(self.uploads, max_files=max_files)
        self.manager = helpers.TestableStreamManager(reactor=self.clock)
        for each in (generic.FallbackHandler(), disco.DiscoHandler(), self.handler):
            each.setHandlerParent(self.manager)
        self._ids = 0

    def ask(
        self, child: domish.Element, sender: str = ROMEO, type: str = "set"
    ) -> domish.Element:
        """Send an IQ with ``child``; its one reply, sent before this returns."""
        self._ids += 1
        iq = domish.Element((None, "iq"))
        iq["type"] = type
        iq["id"] = f"exec{self._ids}"
        iq["from"] = sender
        iq["to"] = SERVICE
        iq.addChild(child)
        output = self.manager.stub.output
        before = len(output)
        self.manager.stub.send(iq)
        assert len(output) == before + 1, "exactly one reply"
        reply: domish.Element = output[-1]
        assert reply["id"] == iq["id"]
        assert reply["to"] == sender
        assert reply["from"] == SERVICE
        return reply

    def run(
        self,
        node: str,
        sender: str = ROMEO,
        action: str | None = None,
        sessionid: str | None = None,
        payload: domish.Element | None = None,
    ) -> domish.Element:
        """One step of a command."""
        command = domish.Element((NS_COMMANDS, "command"))
        command["node"] = node
        if action is not None:
            command["action"] = action
        if sessionid is not None:
            command["sessionid"] = sessionid
        if payload is not None:
            command.addChild(payload)
        return self.ask(command, sender)

    def store_file(
        self,
        owner: str,
        name: str,
        data: bytes,
        at: float,
        expires: float | None = None,
    ) -> FileRecord:
        """A stored file with its completed record, uploaded at ``at + 1``."""
        info = done(
            stored_file(
                self.storage,
                self.store,
                data,
                name,
                "text/plain",
                created=at + 1,
                owner=owner,
                expires=expires,
            )
        )
        record = done(self.store.get(info.file_id))
        assert record is not None
        return record


@pytest.fixture
def storage() -> MemoryStorage:
    """An empty storage in memory."""
    return MemoryStorage()


@pytest.fixture
def store() -> MemoryMetadataStore:
    """An empty metadata store in memory, started."""
    s = MemoryMetadataStore()
    done(s.start())
    return s


@pytest.fixture
def service(store: MemoryMetadataStore, storage: MemoryStorage) -> Service:
    """The ad-hoc handler with the default test policy."""
    return Service(store, storage)


def command_of(reply: domish.Element) -> domish.Element:
    assert reply["type"] == "result", reply.toXml()
    found: domish.Element = next(reply.elements(NS_COMMANDS, "command"))
    return found


def error_of(reply: domish.Element) -> tuple[str, str, list[str]]:
    """(type, condition, names of the XEP-0050 specific conditions)."""
    assert reply["type"] == "error", reply.toXml()
    error = reply.error
    condition = next(
        c.name for c in error.elements() if c.uri == NS_STANZAS and c.name != "text"
    )
    specific = [c.name for c in error.elements() if c.uri == NS_COMMANDS]
    return error["type"], condition, specific


def notes_of(command: domish.Element) -> list[tuple[str, str]]:
    return [(n["type"], str(n)) for n in command.elements(NS_COMMANDS, "note")]


def form_of(command: domish.Element) -> domish.Element:
    found: domish.Element = next(command.elements(NS_DATA, "x"))
    return found


def names_in(form: domish.Element) -> list[str]:
    return [fields_of(i)["name"] for i in form.elements(NS_DATA, "item")]


def fields_of(parent: domish.Element) -> dict[str, str]:
    return {
        f["var"]: str(next(f.elements(NS_DATA, "value")))
        for f in parent.elements(NS_DATA, "field")
    }


def submit(**values: str) -> domish.Element:
    form = domish.Element((NS_DATA, "x"))
    form["type"] = "submit"
    for var, value in values.items():
        field = form.addElement("field")
        field["var"] = var
        field.addElement("value", content=value)
    return form


def disco_query(namespace: str, node: str | None = None) -> domish.Element:
    query = domish.Element((namespace, "query"))
    if node is not None:
        query["node"] = node
    return query


def test_the_handler_provides_idisco(service: Service) -> None:
    """The ad-hoc handler is a wokkel disco provider (IDisco, checked)."""
    assert verifyObject(IDisco, service.handler)
    assert verifyObject(IDisco, CommandsHandler(Clock()))


# -- discovery -------------------------------------------------------------------


def test_disco_info_advertises_commands(service: Service) -> None:
    """The service's disco info has the commands feature."""
    reply = service.ask(disco_query(disco.NS_DISCO_INFO), type="get")
    features = {f["var"] for f in reply.query.elements(disco.NS_DISCO_INFO, "feature")}
    assert NS_COMMANDS in features


def test_disco_items_list_the_commands(service: Service) -> None:
    """Each command is an item of the commands node, at the JID that was asked."""
    reply = service.ask(disco_query(disco.NS_DISCO_ITEMS, NS_COMMANDS), type="get")
    assert reply["type"] == "result"
    assert reply.query["node"] == NS_COMMANDS
    items = [
        (i["jid"], i["node"], i["name"])
        for i in reply.query.elements(disco.NS_DISCO_ITEMS, "item")
    ]
    assert items == [
        (SERVICE, "list", "List my uploads"),
        (SERVICE, "delete", "Delete one of my uploads"),
        (SERVICE, "usage", "Show my usage and quotas"),
    ]
    # The service's own items stay empty; outsiders see no commands.
    reply = service.ask(disco_query(disco.NS_DISCO_ITEMS), type="get")
    assert list(reply.query.elements()) == []
    reply = service.ask(
        disco_query(disco.NS_DISCO_ITEMS, NS_COMMANDS), OUTSIDER, type="get"
    )
    assert reply["type"] == "result"
    assert list(reply.query.elements()) == []


def test_disco_info_of_a_command_node(service: Service) -> None:
    """automation/command-node with commands and data forms; forbidden to outsiders."""
    reply = service.ask(disco_query(disco.NS_DISCO_INFO, "delete"), type="get")
    assert reply["type"] == "result"
    identities = [
        (i["category"], i["type"], i["name"])
        for i in reply.query.elements(disco.NS_DISCO_INFO, "identity")
    ]
    assert identities == [("automation", "command-node", "Delete one of my uploads")]
    features = {f["var"] for f in reply.query.elements(disco.NS_DISCO_INFO, "feature")}
    assert features == {NS_COMMANDS, NS_DATA}

    reply = service.ask(disco_query(disco.NS_DISCO_INFO, NS_COMMANDS), type="get")
    kinds = [
        (i["category"], i["type"])
        for i in reply.query.elements(disco.NS_DISCO_INFO, "identity")
    ]
    assert kinds == [("automation", "command-list")]

    reply = service.ask(
        disco_query(disco.NS_DISCO_INFO, "delete"), OUTSIDER, type="get"
    )
    assert error_of(reply)[:2] == ("cancel", "forbidden")
    reply = service.ask(disco_query(disco.NS_DISCO_INFO, "nope"), type="get")
    assert error_of(reply)[1] == "item-not-found"


# -- list --------------------------------------------------------------------------


def test_list_shows_my_files_newest_first(service: Service) -> None:
    """A result form: reported columns, one item per file of mine, none of others."""
    older = service.store_file("romeo@montague.tld", "a.txt", b"12345", NOW - 50)
    newer = service.store_file(
        "romeo@montague.tld", "très b.txt", b"x" * 2048, NOW - 10, expires=NOW + DAY
    )
    service.store_file("juliet@montague.tld", "hers.txt", b"secret", NOW - 5)
    command = command_of(service.run("list"))
    assert command["node"] == "list"
    assert command["status"] == "completed"
    assert command["sessionid"]
    form = form_of(command)
    assert form["type"] == "result"
    reported = next(form.elements(NS_DATA, "reported"))
    columns = [(f["var"], f["label"]) for f in reported.elements(NS_DATA, "field")]
    assert [var for var, _ in columns] == ["name", "size", "date", "expires", "url"]
    items = [fields_of(item) for item in form.elements(NS_DATA, "item")]
    assert items == [
        {
            "name": "très b.txt",
            "size": "2048",
            "date": "2023-11-14T22:13:11Z",
            "expires": "2023-11-15T22:13:20Z",
            "url": GET_BASE + url_path(newer.file_id, "très b.txt"),
        },
        {
            "name": "a.txt",
            "size": "5",
            "date": "2023-11-14T22:12:31Z",
            "expires": "never",
            "url": GET_BASE + url_path(older.file_id, "a.txt"),
        },
    ]


def test_list_without_files_completes_with_a_note(service: Service) -> None:
    """With no files, list completes at once with an info note and no form."""
    command = command_of(service.run("list", action="execute"))
    assert command["status"] == "completed"
    assert notes_of(command) == [("info", "You have no uploads.")]
    assert list(command.elements(NS_DATA, "x")) == []


def test_list_is_paged_by_count(
    store: MemoryMetadataStore, storage: MemoryStorage
) -> None:
    """At most max_files per page; next shows the rest, then the command completes."""
    service = Service(store, storage, max_files=2)
    for n in range(3):
        service.store_file("romeo@montague.tld", f"{n}.txt", b"x", NOW - 10 + n)
    command = command_of(service.run("list"))
    assert command["status"] == "executing"
    actions = next(command.elements(NS_COMMANDS, "actions"))
    assert actions["execute"] == "next"
    assert [a.name for a in actions.elements()] == ["next", "complete"]
    form = form_of(command)
    assert str(next(form.elements(NS_DATA, "title"))) == "Your uploads, 1-2 of 3"
    assert names_in(form) == ["2.txt", "1.txt"]
    command = command_of(
        service.run("list", action="next", sessionid=command["sessionid"])
    )
    assert command["status"] == "completed"
    form = form_of(command)
    assert str(next(form.elements(NS_DATA, "title"))) == "Your uploads, 3-3 of 3"
    assert names_in(form) == ["0.txt"]
    assert list(command.elements(NS_COMMANDS, "actions")) == []
    assert len(service.handler.sessions) == 0


def long_name(n: int) -> str:
    """A 255-byte name (UTF-8) that also doubles in XML (& is &amp;)."""
    name = f"{n:03d}-" + "é&" * 82 + "x.txt"
    assert len(name.encode("utf-8")) == 255, len(name.encode("utf-8"))
    return name


def page_through(
    service: Service, node: str, action: str = "next"
) -> list[domish.Element]:
    """Every reply of a paged command, from the first to the completed one."""
    replies = [service.run(node)]
    while command_of(replies[-1])["status"] == "executing":
        assert len(replies) < 100
        replies.append(
            service.run(
                node, action=action, sessionid=command_of(replies[-1])["sessionid"]
            )
        )
    return replies


def test_a_list_of_100_long_names_stays_under_the_byte_bound(
    service: Service,
) -> None:
    """100 files of 255-byte names: every page's form is at most MAX_FORM_BYTES,
    and paging through (next, or execute) shows every file exactly once."""
    names = [long_name(n) for n in range(100)]
    for n, name in enumerate(names):
        service.store_file("romeo@montague.tld", name, b"x", NOW - 1000 + n)
    for action in ("next", "execute"):
        replies = page_through(service, "list", action)
        assert len(replies) > 1
        shown: list[str] = []
        for reply in replies:
            form = form_of(command_of(reply))
            assert xml_size(form) <= MAX_FORM_BYTES
            assert xml_size(reply) <= MAX_FORM_BYTES + 1024
            shown += names_in(form)
        assert shown == names[::-1]
        assert len({command_of(r)["sessionid"] for r in replies}) == 1


def test_paging_shows_each_file_once_while_files_come_and_go(
    store: MemoryMetadataStore, storage: MemoryStorage
) -> None:
    """A file uploaded or deleted between pages neither repeats nor hides another."""
    service = Service(store, storage, max_files=2)
    records = [
        service.store_file("romeo@montague.tld", f"{n}.txt", b"x", NOW - 100 + n)
        for n in range(5)
    ]
    command = command_of(service.run("list"))
    assert names_in(form_of(command)) == ["4.txt", "3.txt"]
    service.store_file("romeo@montague.tld", "new.txt", b"x", NOW)
    done(service.uploads.delete("romeo@montague.tld", records[4].file_id))
    command = command_of(
        service.run("list", action="next", sessionid=command["sessionid"])
    )
    assert names_in(form_of(command)) == ["2.txt", "1.txt"]
    command = command_of(service.run("list", sessionid=command["sessionid"]))
    assert names_in(form_of(command)) == ["0.txt"]
    assert command["status"] == "completed"


def test_a_paged_list_can_be_completed_or_canceled_early(
    store: MemoryMetadataStore, storage: MemoryStorage
) -> None:
    """complete and cancel end the session; prev is not offered."""
    service = Service(store, storage, max_files=1)
    for n in range(3):
        service.store_file("romeo@montague.tld", f"{n}.txt", b"x", NOW - 10 + n)
    for action, status in (("complete", "completed"), ("cancel", "canceled")):
        sessionid = command_of(service.run("list"))["sessionid"]
        reply = service.run("list", action="prev", sessionid=sessionid)
        assert error_of(reply) == ("modify", "bad-request", ["bad-action"])
        command = command_of(service.run("list", action=action, sessionid=sessionid))
        assert command["status"] == status
        reply = service.run("list", action="next", sessionid=sessionid)
        assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])


def test_names_are_shown_escaped(service: Service) -> None:
    """U+202E and control characters in stored names show as escapes in the
    list, the delete form and the note."""
    record = service.store_file(
        "romeo@montague.tld", "invoice\u202efdp\x1b.exe", b"x", NOW - 5
    )
    shown = "invoice\\u202efdp\\x1b.exe"
    form = form_of(command_of(service.run("list")))
    assert names_in(form) == [shown]
    sessionid, command = delete_form(service)
    (option,) = next(form_of(command).elements(NS_DATA, "field")).elements(
        NS_DATA, "option"
    )
    assert option["label"].startswith(shown + " (")
    command = command_of(
        service.run("delete", sessionid=sessionid, payload=submit(file=record.file_id))
    )
    assert notes_of(command) == [("info", f"Deleted {shown}.")]


# -- delete ------------------------------------------------------------------------


def delete_form(service: Service) -> tuple[str, domish.Element]:
    command = command_of(service.run("delete"))
    assert command["status"] == "executing"
    return command["sessionid"], command


def test_delete_offers_my_files_then_deletes_the_chosen_one(
    service: Service,
) -> None:
    """delete offers only my files (newest first, required before options), deletes the
    one submitted, and ends the session."""
    mine = service.store_file("romeo@montague.tld", "a.txt", b"12345", NOW - 50)
    kept = service.store_file("romeo@montague.tld", "b.txt", b"kept", NOW - 10)
    service.store_file("juliet@montague.tld", "hers.txt", b"secret", NOW - 5)
    sessionid, command = delete_form(service)
    actions = next(command.elements(NS_COMMANDS, "actions"))
    assert actions["execute"] == "complete"
    assert [a.name for a in actions.elements()] == ["complete"]
    form = form_of(command)
    assert form["type"] == "form"
    (field,) = form.elements(NS_DATA, "field")
    assert (field["type"], field["var"]) == ("list-single", "file")
    assert [c.name for c in field.elements()][:2] == ["required", "option"]
    options = [
        (o["label"], str(next(o.elements(NS_DATA, "value"))))
        for o in field.elements(NS_DATA, "option")
    ]
    assert options == [
        ("b.txt (4 bytes, 2023-11-14 22:13:11 UTC)", kept.file_id),
        ("a.txt (5 bytes, 2023-11-14 22:12:31 UTC)", mine.file_id),
    ]

    command = command_of(
        service.run("delete", sessionid=sessionid, payload=submit(file=mine.file_id))
    )
    assert command["status"] == "completed"
    assert command["sessionid"] == sessionid
    assert notes_of(command) == [("info", "Deleted a.txt.")]
    assert done(service.store.get(mine.file_id)) is None
    assert done(service.storage.stat(mine.file_id)) is None
    assert done(service.storage.stat(kept.file_id)) is not None
    # The session ended with the command.
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=kept.file_id)
    )
    assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])
    assert done(service.store.get(kept.file_id)) is not None


def test_the_delete_form_is_paged_under_the_byte_bound(
    service: Service,
) -> None:
    """100 long names: each form is at most MAX_FORM_BYTES, next offers the
    following files (each once), and a file of a later page can be deleted."""
    names = [long_name(n) for n in range(100)]
    records = [
        service.store_file("romeo@montague.tld", name, b"x", NOW - 1000 + n)
        for n, name in enumerate(names)
    ]
    replies = [service.run("delete")]
    offered: list[str] = []
    while True:
        command = command_of(replies[-1])
        form = form_of(command)
        assert xml_size(form) <= MAX_FORM_BYTES
        (field,) = form.elements(NS_DATA, "field")
        page = [
            str(next(o.elements(NS_DATA, "value")))
            for o in field.elements(NS_DATA, "option")
        ]
        offered += page
        actions = next(command.elements(NS_COMMANDS, "actions"))
        assert actions["execute"] == "complete"
        more = [a.name for a in actions.elements()] == ["next", "complete"]
        # Required only on the last page, where next is not offered.
        assert bool(list(field.elements(NS_DATA, "required"))) is not more
        if not more:
            break
        replies.append(
            service.run("delete", action="next", sessionid=command["sessionid"])
        )
    assert len(replies) > 1
    assert offered == [r.file_id for r in records[::-1]]
    # The last page's files can be deleted; the first page's are no longer offered.
    sessionid = command_of(replies[-1])["sessionid"]
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=records[-1].file_id)
    )
    assert error_of(reply) == ("modify", "bad-request", ["bad-payload"])
    command = command_of(
        service.run(
            "delete", sessionid=sessionid, payload=submit(file=records[0].file_id)
        )
    )
    assert command["status"] == "completed"
    assert done(service.store.get(records[0].file_id)) is None


def test_delete_with_action_complete(service: Service) -> None:
    """Submitting the form with action complete deletes the chosen file too."""
    record = service.store_file("romeo@montague.tld", "a.txt", b"1", NOW - 5)
    sessionid, _ = delete_form(service)
    command = command_of(
        service.run(
            "delete",
            action="complete",
            sessionid=sessionid,
            payload=submit(file=record.file_id),
        )
    )
    assert command["status"] == "completed"
    assert done(service.store.get(record.file_id)) is None


def test_deleting_someone_elses_file_fails(service: Service) -> None:
    """A file the form did not offer (someone else's) is bad-payload and stays."""
    service.store_file("romeo@montague.tld", "a.txt", b"1", NOW - 5)
    hers = service.store_file("juliet@montague.tld", "hers.txt", b"2", NOW - 5)
    sessionid, _ = delete_form(service)
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=hers.file_id)
    )
    assert error_of(reply) == ("modify", "bad-request", ["bad-payload"])
    assert done(service.store.get(hers.file_id)) is not None
    assert done(service.storage.stat(hers.file_id)) is not None
    # Even if she offered it to him by mistake, Uploads.delete checks the owner.
    assert done(service.uploads.delete("romeo@montague.tld", hers.file_id)) is None


def test_deleting_a_file_gone_meanwhile(service: Service) -> None:
    """A file deleted between the form and its submission is item-not-found."""
    record = service.store_file("romeo@montague.tld", "a.txt", b"1", NOW - 5)
    sessionid, _ = delete_form(service)
    done(service.uploads.delete("romeo@montague.tld", record.file_id))
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=record.file_id)
    )
    assert error_of(reply)[:2] == ("cancel", "item-not-found")


def test_delete_needs_a_choice(service: Service) -> None:
    """A submission without a file or with prev is refused, and the session survives
    it."""
    record = service.store_file("romeo@montague.tld", "a.txt", b"1", NOW - 5)
    sessionid, _ = delete_form(service)
    for payload in (None, submit(), submit(file="  ")):
        reply = service.run("delete", sessionid=sessionid, payload=payload)
        assert error_of(reply) == ("modify", "bad-request", ["bad-payload"])
    reply = service.run("delete", action="prev", sessionid=sessionid)
    assert error_of(reply) == ("modify", "bad-request", ["bad-action"])
    # The session survives a bad submission.
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=record.file_id)
    )
    assert command_of(reply)["status"] == "completed"


def test_delete_cancel(service: Service) -> None:
    """cancel ends the delete session and deletes nothing."""
    record = service.store_file("romeo@montague.tld", "a.txt", b"1", NOW - 5)
    sessionid, _ = delete_form(service)
    command = command_of(service.run("delete", action="cancel", sessionid=sessionid))
    assert (command["status"], command["sessionid"]) == ("canceled", sessionid)
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=record.file_id)
    )
    assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])
    assert done(service.store.get(record.file_id)) is not None


def test_delete_without_files_completes_with_a_note(service: Service) -> None:
    """With no files, delete completes at once with an info note."""
    command = command_of(service.run("delete"))
    assert command["status"] == "completed"
    assert notes_of(command) == [("info", "You have no uploads to delete.")]


def test_sessions_belong_to_requester_and_node_and_expire(
    service: Service,
) -> None:
    """A session answers only its full JID and node, and ends after 600 s of the clock
    without a step."""
    record = service.store_file("romeo@montague.tld", "a.txt", b"1", NOW - 5)
    sessionid, _ = delete_form(service)
    payload = submit(file=record.file_id)
    for sender, node in (
        ("romeo@montague.tld/other", "delete"),  # another resource
        (JULIET, "delete"),
        (ROMEO, "list"),
    ):
        reply = service.run(node, sender, sessionid=sessionid, payload=payload)
        assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])
    reply = service.run("delete", sessionid="made-up", payload=payload)
    assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])
    service.clock.advance(599)
    assert len(service.handler.sessions) == 1
    service.clock.advance(1)
    reply = service.run("delete", sessionid=sessionid, payload=payload)
    assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])
    assert len(service.handler.sessions) == 0
    assert done(service.store.get(record.file_id)) is not None


def test_sessions_are_bounded() -> None:
    """At most per_owner sessions per user and limit in all are kept, the oldest going
    first."""
    clock = Clock()
    sessions = Sessions(clock, timeout=60, per_owner=2, limit=3)
    a1 = sessions.start("delete", "a@x/1", "a@x")
    a2 = sessions.start("delete", "a@x/2", "a@x")
    a3 = sessions.start("delete", "a@x/1", "a@x")
    assert sessions.get(a1.id, "delete", "a@x/1") is None  # the owner's oldest went
    assert sessions.get(a2.id, "delete", "a@x/2") is a2
    assert sessions.get(a3.id, "delete", "a@x/1") is a3
    b1 = sessions.start("delete", "b@x/1", "b@x")
    b2 = sessions.start("delete", "b@x/1", "b@x")
    assert len(sessions) == 3
    assert sessions.get(a2.id, "delete", "a@x/2") is None  # the oldest of all went
    assert {b1.id, b2.id, a3.id} == {
        s.id for s in (b1, b2, a3) if sessions.get(s.id, "delete", s.requester)
    }
    assert len({a1.id, a2.id, a3.id, b1.id, b2.id}) == 5


# -- usage -------------------------------------------------------------------------


def test_usage_against_quotas(service: Service) -> None:
    """Stored bytes, and files and bytes in the window (live slots too), with limits."""
    service.store_file("romeo@montague.tld", "old.txt", b"o" * 100, NOW - 2 * DAY)
    service.store_file("romeo@montague.tld", "new.txt", b"n" * 200, NOW - 60)
    slot = FileRecord(
        file_id=new_file_id(),
        owner="romeo@montague.tld",
        filename="coming.bin",
        size=50,
        content_type=None,
        purpose="message",
        created=NOW - 10,
        slot_expires=NOW + 290,
        expires=None,
    )
    done(service.store.reserve(slot, DAY, lambda usage: None))
    service.store_file("juliet@montague.tld", "hers.txt", b"h" * 999, NOW - 5)
    command = command_of(service.run("usage"))
    assert command["status"] == "completed"
    assert fields_of(form_of(command)) == {
        "stored-bytes": "350",
        "stored-limit": "5000",
        "window": "86400",
        "window-files": "2",
        "window-files-limit": "5",
        "window-bytes": "250",
        "window-bytes-limit": "1000",
    }
    assert notes_of(command) == [
        (
            "info",
            "Stored: 350 bytes of 4.9 KiB. In the last 24 hours: 2 of 5 files, "
            "250 bytes of 1000 bytes.",
        )
    ]


def test_usage_without_limits(
    store: MemoryMetadataStore, storage: MemoryStorage
) -> None:
    """Without quotas, usage says "no limit" and its limit fields are 0."""
    service = Service(store, storage, SlotPolicy(100, ("montague.tld",)))
    command = command_of(service.run("usage"))
    assert notes_of(command) == [
        (
            "info",
            "Stored: 0 bytes (no limit). In the last 24 hours: "
            "0 files (no limit), 0 bytes (no limit).",
        )
    ]
    assert fields_of(form_of(command))["window-files-limit"] == "0"


def test_size_text() -> None:
    """Byte counts in sentences: bytes under 1 KiB, then binary units up to PiB
    (one formatter, ``_units.human_size``, since #11: it stopped at TiB)."""
    assert size_text(0) == "0 bytes"
    assert size_text(1023) == "1023 bytes"
    assert size_text(1536) == "1.5 KiB"
    assert size_text(5 * 1024**3) == "5.0 GiB"
    assert size_text(3 * 1024**5) == "3.0 PiB"


# -- refusals ----------------------------------------------------------------------


def test_outsiders_are_forbidden(service: Service) -> None:
    """Users the policy refuses get cancel/forbidden for every node, known or not."""
    for node in ("list", "delete", "usage", "nope"):
        reply = service.run(node, OUTSIDER)
        assert error_of(reply)[:2] == ("cancel", "forbidden")


def test_malformed_commands(service: Service) -> None:
    """No node, unknown actions, prev at the start, IQ get and unknown nodes are
    refused with XEP-0050's conditions, echoing client values short and escaped."""
    reply = service.run("nope")
    assert error_of(reply) == ("cancel", "item-not-found", [])
    reply = service.run("list", action="jump")
    assert error_of(reply) == ("modify", "bad-request", ["malformed-action"])
    reply = service.run("list", action="prev")
    assert error_of(reply) == ("modify", "bad-request", ["bad-action"])
    reply = service.ask(domish.Element((NS_COMMANDS, "command")))
    assert error_of(reply)[:2] == ("modify", "bad-request")
    get = domish.Element((NS_COMMANDS, "command"))
    get["node"] = "list"
    reply = service.ask(get, type="get")
    assert error_of(reply)[:2] == ("modify", "bad-request")
    # A cancel before anything started is simply canceled.
    command = command_of(service.run("delete", action="cancel"))
    assert command["status"] == "canceled"
    # A client's long or odd value is echoed short and escaped.
    reply = service.run("list", action="\u202e" + "x" * 5000)
    text = str(next(reply.error.elements(NS_STANZAS, "text")))
    assert text.startswith("Unknown action: '\\u202exxx") and len(text) < 80
    reply = service.run("n" * 5000)
    text = str(next(reply.error.elements(NS_STANZAS, "text")))
    assert len(text) < 80
    # The error echoes the command (XEP-0050's examples do).
    reply = service.run("nope")
    assert next(reply.elements(NS_COMMANDS, "command"))["node"] == "nope"


# -- the HTTP side and the service tree ----------------------------------------------


def test_deleted_file_answers_404_at_once(
    store: MemoryMetadataStore, storage: MemoryStorage
) -> None:
    """GET checks the record first: right after the command, the URL is dead."""
    site = make_harness(metadata=store, storage=storage)
    service = Service(store, storage)
    gone = service.store_file("romeo@montague.tld", "a.txt", b"bye", NOW)
    kept = service.store_file("romeo@montague.tld", "b.txt", b"hi", NOW)
    urls = {r.file_id: "/" + url_path(r.file_id, r.filename) for r in (gone, kept)}
    for url in urls.values():
        assert site.request("GET", url).code == 200
    sessionid, _ = delete_form(service)
    reply = service.run(
        "delete", sessionid=sessionid, payload=submit(file=gone.file_id)
    )
    assert command_of(reply)["status"] == "completed"
    assert site.request("GET", urls[gone.file_id]).code == 404
    answer = site.request("GET", urls[kept.file_id])
    assert (answer.code, answer.body) == (200, b"hi")


@implementer(IServiceReactor)
class ThreadedMemoryReactor(MemoryReactorClock):
    """A memory reactor with a thread pool that is never started."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = ThreadPool(1, 1)

    def getThreadPool(self) -> ThreadPool:
        return self.pool

    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        callable(*args, **kwargs)

    def callInThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        raise AssertionError("no thread is used before the service starts")

    def suggestThreadPoolSize(self, size: int) -> None:
        pass


def test_the_service_runs_the_commands(tmp_path: Path) -> None:
    """make_service gives the xmpp service an AdHocHandler on the config's GET
    URL, domains, and the reactor it was given (never started: no port)."""
    config = parse_config(
        {
            "component": {"jid": "upload.localhost", "secret": "s"},
            "http": {
                "listen": "tcp:0:interface=127.0.0.1",
                "public_url": "https://upload.localhost/",
            },
            "storage": {"path": str(tmp_path / "store")},
        },
        tmp_path,
    )
    reactor = ThreadedMemoryReactor()
    root = make_service(config, reactor)
    xmpp: Any = root.getServiceNamed("xmpp")
    handlers = list(xmpp.streams)
    (adhoc,) = [h for h in handlers if isinstance(h, AdHocHandler)]
    assert adhoc.uploads.get_base_url == "https://upload.localhost/"
    assert adhoc.policy.domains == ("localhost",)
    assert adhoc.uploads.clock is reactor
    assert reactor.tcpServers == [] and reactor.tcpClients == []


# -- the machinery, for an embedder's own commands ------------------------------------


class Hello(Command):
    """A one-stage command, as an embedder would write it."""

    node = "hello"
    name = "Say hello"

    async def start(self, request: CommandRequest) -> domish.Element:
        return command_element(
            self.node,
            new_session_id(),
            "completed",
            notes=[("info", f"Hi {request.user}")],
        )


def only_romeo(requester: JID | None) -> str:
    if requester is None or requester.userhost() != "romeo@montague.tld":
        raise NotAllowed("Romeo only")
    return "romeo@montague.tld"


def test_an_embedders_command_is_listed_and_run(
    store: MemoryMetadataStore, storage: MemoryStorage
) -> None:
    """A Command registered with CommandsHandler is a disco item, runs for
    those ``authorize`` lets in, and others are forbidden it."""
    handler = CommandsHandler(Clock(), [Hello()], authorize=only_romeo)
    service = Service(store, storage, handler=handler)
    reply = service.ask(disco_query(disco.NS_DISCO_ITEMS, NS_COMMANDS), type="get")
    items = [(i["node"], i["name"]) for i in reply.query.elements()]
    assert items == [("hello", "Say hello")]
    command = command_of(service.run("hello"))
    assert (command["status"], notes_of(command)) == (
        "completed",
        [("info", "Hi romeo@montague.tld")],
    )
    assert error_of(service.run("hello", JULIET))[:2] == ("cancel", "forbidden")
    # A one-stage command has no session to go on with.
    reply = service.run("hello", sessionid=command["sessionid"])
    assert error_of(reply) == ("modify", "bad-request", ["bad-sessionid"])


def test_a_node_is_registered_once() -> None:
    """A second command at a node already taken is refused."""
    handler = CommandsHandler(Clock(), [Hello()])
    with pytest.raises(ValueError, match="hello"):
        handler.register(Hello())


def test_an_embedders_command_beside_the_owner_commands(service: Service) -> None:
    """A command registered on the service's AdHocHandler is listed after the
    owner commands and runs on the same stream."""
    service.handler.register(Hello())
    reply = service.ask(disco_query(disco.NS_DISCO_ITEMS, NS_COMMANDS), type="get")
    nodes = [i["node"] for i in reply.query.elements()]
    assert nodes == ["list", "delete", "usage", "hello"]
    command = command_of(service.run("hello"))
    assert notes_of(command) == [("info", "Hi romeo@montague.tld")]
