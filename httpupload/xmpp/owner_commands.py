"""The owners' ad-hoc commands: list, delete, and usage of their own uploads.

On the XEP-0050 machinery of ``httpupload.xmpp.commands``:

- ``list``: the requester's files still served (name, size, dates, GET URL)
  as a result form with ``<reported>`` and one ``<item>`` per file;
- ``delete``: a form with one of the requester's files to choose
  (``list-single``, status ``executing``); submitting it deletes the file
  (``owners.Uploads.delete``: storage first, then the record, so its URL
  answers 404 at once);
- ``usage``: bytes held and the sliding window's files and bytes, beside the
  quotas that apply (0: no limit), in ``httpupload.xmpp.owner_usage``.

Every step is answered in one IQ result.  A form holds at most ``max_files``
files and ``paging.MAX_FORM_BYTES`` of XML; the rest follow in pages,
XEP-0050's ``next`` action, each page going on after the last file shown
(``owners.listing_key``), so paging shows each file once.  Names and other
stored text are shown through ``display``.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger
from twisted.words.xish import domish
from wokkel import data_form

from httpupload._units import display
from httpupload.dates import format_datetime
from httpupload.logs import short_id
from httpupload.metadata import FileRecord
from httpupload.owners import Listed, Uploads, listing_key, uploaded_at
from httpupload.xmpp.commands import (
    NS_DATA,
    Command,
    CommandRequest,
    Session,
    command_element,
    command_error,
    new_session_id,
)
from httpupload.xmpp.owner_usage import NODE_USAGE, UsageCommand, size_text
from httpupload.xmpp.paging import Page, budget, field, page_of, xml_size

__all__ = [
    "FILE_FIELD",
    "NODE_DELETE",
    "NODE_LIST",
    "NODE_USAGE",
    "DeleteCommand",
    "ListCommand",
    "UsageCommand",
    "owner_commands",
    "size_text",
]

NODE_LIST = "list"
NODE_DELETE = "delete"
FILE_FIELD = "file"

log = Logger()

Cursor = tuple[float, str]
FilePage = Page[Listed, Cursor]


def _listing_key(listed: Listed) -> Cursor:
    return listing_key(listed.record)


@dataclass
class Paging:
    """A session's state: where the listing stands, what the form offered."""

    cursor: Cursor | None = None  # None: the last page was shown
    offered: frozenset[str] = frozenset()  # file ids the delete form offered


def _paging(session: Session) -> Paging:
    state = session.state
    assert isinstance(state, Paging), "a session of the owner commands"
    return state


# -- list ----------------------------------------------------------------------

LIST_COLUMNS = (
    ("name", "Name"),
    ("size", "Size (bytes)"),
    ("date", "Uploaded"),
    ("expires", "Expires"),
    ("url", "URL"),
)


def list_item(listed: Listed) -> domish.Element:
    """One file as a result form's ``<item/>``."""
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
        item.addChild(field(var, values[var]))
    return item


def list_form(page: FilePage) -> domish.Element:
    """The result form of one page of files."""
    title = "Your uploads" if page.whole else f"Your uploads, {page.span()}"
    form: domish.Element = data_form.Form("result", title=title).toElement()
    reported = form.addElement("reported")
    for var, label in LIST_COLUMNS:
        reported.addChild(field(var, label=label))
    for listed in page.items:
        form.addChild(list_item(listed))
    return form


def list_page(files: list[Listed], cursor: Cursor | None, max_files: int) -> FilePage:
    """The page of the list after ``cursor``, under the byte bound."""
    empty: FilePage = Page([], 0, 0, False)
    return page_of(
        files,
        cursor,
        _listing_key,
        lambda f: xml_size(list_item(f)),
        budget(list_form(empty)),
        max_files,
    )


class _OwnFilesCommand(Command):
    """A command on the requester's own files, shown at most ``max_files`` a page."""

    def __init__(self, uploads: Uploads, max_files: int) -> None:
        self.uploads = uploads
        self.max_files = max_files


class ListCommand(_OwnFilesCommand):
    """``list``: my files still served, in pages if need be."""

    node = NODE_LIST
    name = "List my uploads"

    async def start(self, request: CommandRequest) -> domish.Element:
        return await self._page(request, None)

    async def resume(self, request: CommandRequest, session: Session) -> domish.Element:
        if request.action == "complete":
            request.sessions.end(session)
            return command_element(self.node, session.id, "completed")
        # execute (whose default is next) and next: the next page.
        return await self._page(request, session)

    async def _page(
        self, request: CommandRequest, session: Session | None
    ) -> domish.Element:
        """The first page of the owner's files, or the one after ``session``'s."""
        sessions = request.sessions
        owner = session.owner if session is not None else request.user
        files = await self.uploads.list(owner)
        cursor = _paging(session).cursor if session is not None else None
        page = list_page(files, cursor, self.max_files)
        if session is None and page.more:
            session = sessions.start(
                self.node, request.requester.full(), owner, Paging()
            )
        session_id = session.id if session is not None else new_session_id()
        if not page.items:
            text = "You have no uploads." if cursor is None else "No more uploads."
            if session is not None:
                sessions.end(session)
            return command_element(
                self.node, session_id, "completed", notes=[("info", text)]
            )
        form = list_form(page)
        if session is None:
            return command_element(self.node, session_id, "completed", payload=form)
        if not page.more:
            sessions.end(session)
            return command_element(self.node, session.id, "completed", payload=form)
        _paging(session).cursor = page.cursor
        sessions.touch(session)
        return command_element(
            self.node,
            session.id,
            "executing",
            actions=("next", "complete"),
            execute="next",
            payload=form,
        )


# -- delete --------------------------------------------------------------------


def option_label(record: FileRecord) -> str:
    """``a.txt (5 bytes, 2023-11-14 22:12:31 UTC)``."""
    when = format_datetime(uploaded_at(record)).replace("T", " ").replace("Z", " UTC")
    return f"{display(record.filename)} ({size_text(record.size)}, {when})"


def _option(listed: Listed) -> data_form.Option:
    return data_form.Option(listed.record.file_id, option_label(listed.record))


def option_size(listed: Listed) -> int:
    """Bytes of one file's ``<option/>`` in the delete form."""
    return xml_size(_option(listed).toElement())


def delete_form(page: FilePage) -> domish.Element:
    """The form offering one page of files to delete."""
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
                options=[_option(f) for f in page.items],
            )
        ],
    )
    element: domish.Element = form.toElement()
    # XEP-0004's schema puts <required/> before the options; wokkel after.
    for field_element in element.elements(NS_DATA, "field"):
        required = list(field_element.elements(NS_DATA, "required"))
        for child in required:
            field_element.children.remove(child)
            field_element.children.insert(0, child)
    return element


def delete_page(files: list[Listed], cursor: Cursor | None, max_files: int) -> FilePage:
    """The page of the delete form after ``cursor``, under the byte bound."""
    empty: FilePage = Page([], 0, 0, True)
    return page_of(
        files, cursor, _listing_key, option_size, budget(delete_form(empty)), max_files
    )


def submitted_file(request: CommandRequest) -> str:
    """The file id of a submitted delete form; ``bad-payload`` if there is none."""
    form = request.submitted()
    found = form.fields.get(FILE_FIELD) if form is not None else None
    value = found.value if found is not None else None
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise command_error(
        "bad-request", "modify", "Choose the file to delete", "bad-payload"
    )


class DeleteCommand(_OwnFilesCommand):
    """``delete``: choose one of my files (in pages), and it is deleted."""

    node = NODE_DELETE
    name = "Delete one of my uploads"

    async def start(self, request: CommandRequest) -> domish.Element:
        return await self._form(request, None)

    async def resume(self, request: CommandRequest, session: Session) -> domish.Element:
        paging = _paging(session)
        if request.action == "next" and paging.cursor is not None:
            return await self._form(request, session)
        # execute (whose default is complete), complete, and next on the
        # last page: delete the chosen file.
        file_id = submitted_file(request)
        if file_id not in paging.offered:
            raise command_error(
                "bad-request",
                "modify",
                "That is not one of the files offered",
                "bad-payload",
            )
        record = await self.uploads.delete(session.owner, file_id)
        request.sessions.end(session)
        if record is None:
            raise command_error("item-not-found", "cancel", "That file is already gone")
        log.info(
            "{owner} deleted {file_id} ({size} bytes)",
            owner=session.owner,
            file_id=short_id(record.file_id),
            size=record.size,
        )
        return command_element(
            self.node,
            session.id,
            "completed",
            notes=[("info", f"Deleted {display(record.filename)}.")],
        )

    async def _form(
        self, request: CommandRequest, session: Session | None
    ) -> domish.Element:
        """The form with the first page of files, or the one after ``session``'s."""
        sessions = request.sessions
        owner = session.owner if session is not None else request.user
        files = await self.uploads.list(owner)
        cursor = _paging(session).cursor if session is not None else None
        page = delete_page(files, cursor, self.max_files)
        if not page.items:
            text = (
                "You have no uploads to delete."
                if cursor is None
                else "No more uploads; nothing was deleted."
            )
            if session is not None:
                sessions.end(session)
            session_id = session.id if session else new_session_id()
            return command_element(
                self.node, session_id, "completed", notes=[("info", text)]
            )
        paging = Paging(page.cursor, frozenset(f.record.file_id for f in page.items))
        if session is None:
            session = sessions.start(self.node, request.requester.full(), owner, paging)
        else:
            session.state = paging
            sessions.touch(session)
        return command_element(
            self.node,
            session.id,
            "executing",
            actions=("next", "complete") if page.more else ("complete",),
            execute="complete",
            payload=delete_form(page),
        )


def owner_commands(uploads: Uploads, max_files: int = 100) -> list[Command]:
    """The three owner commands, in the order disco lists them."""
    return [
        ListCommand(uploads, max_files),
        DeleteCommand(uploads, max_files),
        UsageCommand(uploads),
    ]
