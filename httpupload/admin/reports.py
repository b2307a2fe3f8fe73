"""The commands that only read: ``usage`` and ``list``."""

from __future__ import annotations

from typing import Any

from httpupload._units import display
from httpupload.admin.context import Context, bare_jid
from httpupload.admin.exits import EXIT_OK
from httpupload.admin.output import (
    as_json,
    date,
    human_size,
    iso,
    owner_text,
    plural,
    table,
)
from httpupload.metadata import FileRecord
from httpupload.owners import uploaded_at

__all__ = ["cmd_list", "cmd_usage", "listed_json"]


async def cmd_usage(ctx: Context) -> int:
    """Files and bytes every owner holds now, largest first, with totals."""
    by_owner = await ctx.uploads.usage_by_owner()
    owners = sorted(by_owner.items(), key=lambda item: (-item[1][1], item[0]))
    files = sum(count for count, _ in by_owner.values())
    size = sum(size for _, size in by_owner.values())
    if ctx.args.json:
        report = {
            "owners": [
                {"owner": owner, "files": count, "bytes": held}
                for owner, (count, held) in owners
            ],
            "total": {"owners": len(owners), "files": files, "bytes": size},
        }
        ctx.print(as_json(report))
        return EXIT_OK
    if not owners:
        ctx.print("No files are held.")
        return EXIT_OK
    rows = [
        [owner_text(owner), str(count), human_size(held)]
        for owner, (count, held) in owners
    ]
    lines = table(["OWNER", "FILES", "SIZE"], rows, right=(1, 2))
    total = [plural(len(owners), "owner"), str(files), human_size(size)]
    footer = table(["OWNER", "FILES", "SIZE"], [*rows, total], right=(1, 2))[-1]
    for text in lines:
        ctx.print(text)
    ctx.print("-" * max(len(text) for text in lines))
    ctx.print(footer)
    return EXIT_OK


def listed_json(record: FileRecord, url: str) -> dict[str, Any]:
    """One listed file for ``list --json``: exact values, ISO dates."""
    return {
        "name": record.filename,
        "size": record.size,
        "content_type": record.content_type,
        "purpose": record.purpose,
        "uploaded": iso(uploaded_at(record)),
        "expires": iso(record.expires),
        "sha256": record.sha256,
        "url": url,
    }


async def cmd_list(ctx: Context) -> int:
    """One owner's files still served, newest first: name, size, dates, URL."""
    owner = bare_jid(ctx.args.jid)
    listed = await ctx.uploads.list(owner)
    if ctx.args.json:
        files = [listed_json(item.record, item.url) for item in listed]
        ctx.print(as_json({"owner": owner, "files": files}))
        return EXIT_OK
    if not listed:
        ctx.print(f"{owner_text(owner)} has no files.")
        return EXIT_OK
    rows = [
        [
            display(item.record.filename),
            human_size(item.record.size),
            date(uploaded_at(item.record)),
            date(item.record.expires),
            item.url,
        ]
        for item in listed
    ]
    header = ["NAME", "SIZE", "UPLOADED (UTC)", "EXPIRES (UTC)", "URL"]
    for text in table(header, rows, right=(1,)):
        ctx.print(text)
    size = sum(item.record.size for item in listed)
    ctx.print(f"{plural(len(listed), 'file')}, {human_size(size)}")
    return EXIT_OK
