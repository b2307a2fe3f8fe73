"""The commands that remove: ``delete-user``, ``take-down``, ``purge-expired``.

Each removes a file from storage before its record (``owners.Uploads``, as
the expiry sweep does): a run cut short leaves at most a record without a
file, which the service drops at its next start, and never a file without a
record, which it would adopt and serve again.
"""

from __future__ import annotations

from httpupload._units import display
from httpupload.admin.context import Context, HoldCtrlC, bare_jid, confirm
from httpupload.admin.exits import (
    EXIT_DECLINED,
    EXIT_NOTHING,
    EXIT_OK,
    EXIT_USAGE,
    Failed,
)
from httpupload.admin.output import Progress, date, human_size, owner_text, plural
from httpupload.owners import uploaded_at
from httpupload.urls import BadFileUrl

__all__ = [
    "DELETE_USER_WARNING",
    "cmd_delete_user",
    "cmd_purge_expired",
    "cmd_take_down",
]

#: Shown at the first Ctrl-C of ``delete-user``: what stopping would leave.
DELETE_USER_WARNING = (
    "Still deleting, each file before its record. Stopping now keeps the "
    "files not reached yet, still served: run delete-user again to finish. "
    "Press Ctrl-C again to stop anyway."
)


async def cmd_delete_user(ctx: Context) -> int:
    """Delete every file and slot of a JID (account removal), after asking."""
    owner = bare_jid(ctx.args.jid)
    held = (await ctx.uploads.usage_by_owner()).get(owner)
    if held is not None and not ctx.args.yes:
        count, size = held
        question = (
            f"Delete all {plural(count, 'file')} ({human_size(size)}) of "
            f"{owner_text(owner)}, "
            "and their upload slots? This cannot be undone."
        )
        if not confirm(ctx, question):
            ctx.note("Nothing deleted.")
            return EXIT_DECLINED
    progress = Progress(f"Deleting files of {owner_text(owner)}", "files", ctx.err)
    # One by one, each file before its record (Uploads.delete_all): stopping
    # half-way leaves the files not reached with their records (still
    # served, deleted by a second run), and at most one record whose file is
    # gone, which the service drops at its next start.
    with HoldCtrlC(ctx, DELETE_USER_WARNING):
        deleted = await ctx.uploads.delete_all(owner, progress.update)
    progress.finish()
    if deleted:
        ctx.print(
            f"Deleted {plural(deleted, 'file')} and slots of {owner_text(owner)}."
        )
    else:
        ctx.print(f"{owner_text(owner)} has no files or slots.")
    return EXIT_OK


async def cmd_take_down(ctx: Context) -> int:
    """Remove the file a GET or PUT URL points at, whoever owns it."""
    url: str = ctx.args.url.strip()
    try:
        record = await ctx.uploads.take_down(url)
    except BadFileUrl as e:
        raise Failed(f"not a file URL: {e.text}", EXIT_USAGE) from None
    if record is None:
        ctx.print(f"Nothing matched {display(url)}")
        return EXIT_NOTHING
    name = display(record.filename)
    what = (
        f"{name} ({human_size(record.size)})"
        if record.completed
        else f"the unused slot for {name} ({human_size(record.size)})"
    )
    when = date(uploaded_at(record))
    ctx.print(f"Removed {what} of {owner_text(record.owner)}, from {when} UTC.")
    return EXIT_OK


async def cmd_purge_expired(ctx: Context) -> int:
    """Remove every expired file and dead slot now, batch by batch."""
    progress = Progress("Purging expired files", "removed", ctx.err)
    removed = await ctx.uploads.purge_expired(
        batch=ctx.args.batch, progress=progress.update
    )
    progress.finish()
    if removed:
        ctx.print(f"Removed {removed} expired files and dead slots.")
    else:
        ctx.print("Nothing is due.")
    return EXIT_OK
