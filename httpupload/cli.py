"""The operator command: ``python -m httpupload`` or ``httpupload-admin``.

::

    httpupload-admin --config FILE usage [--json]
    httpupload-admin --config FILE list JID [--json]
    httpupload-admin --config FILE delete-user JID [--yes]
    httpupload-admin --config FILE take-down URL
    httpupload-admin --config FILE purge-expired [--batch N]

It reads the service's own config file and works on the same storage folder
while the service runs: the metadata store is SQLite in WAL mode with a busy
timeout, and files are removed before their records (``httpupload.owners``).
It builds only the storage, the metadata store and the policy, never
``make_service``: no listener, no XMPP connection, and no start-up clean-up
(``FilesystemStorage.prepare`` would throw away the service's uploads in
flight).  The async work runs under ``twisted.internet.task.react``; the
metadata store's thread (not a daemon) is stopped on every way out.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import react
from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from httpupload.backends import Backends, open_backends
from httpupload.cli_args import ArgumentParser
from httpupload.config import Config, load_config
from httpupload.errors import ConfigError
from httpupload.metadata import FileRecord
from httpupload.owners import Uploads, display, uploaded_at
from httpupload.policy import SlotPolicy
from httpupload.privileges import run_as_storage_owner
from httpupload.urls import BadFileUrl

EXIT_OK = 0
EXIT_NOTHING = 1  # take-down: no file matched the URL
EXIT_USAGE = 2  # bad arguments, bad config, unusable storage folder
EXIT_DECLINED = 3  # delete-user: not confirmed
EXIT_FAILED = 4  # a storage or database error during the run
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = f"""\
exit status:
  {EXIT_OK}    done (also: nothing to list, delete or purge)
  {EXIT_NOTHING}    take-down: no file matched the URL
  {EXIT_USAGE}    bad arguments, bad config, or the storage folder cannot be used
  {EXIT_DECLINED}    delete-user: not confirmed
  {EXIT_FAILED}    a storage or database error while running
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

Safe while the service runs on the same storage folder.  Run it as the
service's user, so that what it touches stays the service's."""

NO_OWNER = "(no owner)"  # files adopted at reconciliation (owner "")


class Failed(Exception):
    """Stop with a message on stderr and an exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- presentation --------------------------------------------------------------


def human_size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``2.3 MiB``: binary units, one decimal."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"


def _date(timestamp: float | None, *, never: str = "never") -> str:
    if timestamp is None:
        return never
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner(owner: str) -> str:
    return display(owner) if owner else NO_OWNER


def _json(report: object) -> str:
    """Indented JSON, every non-ASCII character escaped (``\\u202e``)."""
    return json.dumps(report, indent=2, ensure_ascii=True)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """Aligned columns; the columns numbered in ``right`` aligned right."""
    widths = [
        max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)
    ]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress indication on stderr for long runs.

    On a terminal, one line redrawn in place (``\\r``) at most ten times a
    second, ended by a newline; otherwise (a log, a pipe) a plain line every
    ``interval`` seconds, so short runs print nothing and long ones leave a
    trace.  ``total`` None: a running count without a bar.
    """

    def __init__(
        self,
        label: str,
        unit: str,
        stream: TextIO | None = None,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 30,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream)
        self.interval = interval if interval is not None else (0.1 if self.tty else 5)
        self.clock = clock
        self.width = width
        self.done = 0
        self.total: int | None = None
        self._started = clock()
        self._shown_at: float | None = None
        self._shown: tuple[int, int | None] | None = None

    def text(self) -> str:
        if self.total is None:
            return f"{self.label}: {self.done} {self.unit}"
        fraction = self.done / self.total if self.total else 1.0
        if not self.tty:
            return (
                f"{self.label}: {self.done}/{self.total} {self.unit} ({fraction:.0%})"
            )
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return (
            f"{self.label} [{bar}] {self.done}/{self.total} {self.unit} {fraction:4.0%}"
        )

    def _show(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r" + self.text() + "\x1b[K")
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()
        self._shown_at = now
        self._shown = (self.done, self.total)

    def update(self, done: int, total: int | None = None) -> None:
        self.done, self.total = done, total
        now = self.clock()
        since = self._shown_at if self._shown_at is not None else self._started
        first_on_tty = self.tty and self._shown_at is None
        if first_on_tty or now - since >= self.interval:
            self._show(now)

    def finish(self) -> None:
        """Show the final count (if anything was shown) and end the line."""
        if self._shown_at is None:
            return
        if self.tty or self._shown != (self.done, self.total):
            self._show(self.clock())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# -- the pieces, as service.py builds them (minus the service) ------------------


def open_uploads(config: Config, reactor: Any) -> tuple[Uploads, Backends]:
    """``Uploads`` over the service's storage and records; raises ``ConfigError``."""
    backends = open_backends(config, reactor, tool=True)
    uploads = Uploads(
        backends.metadata,
        backends.storage,
        SlotPolicy.from_config(config),
        config.http.get_url,
        reactor,
        put_base_url=config.http.public_url,
    )
    return uploads, backends


@dataclass
class _Closer:
    """Stops the backends once, whoever asks first (end, or Ctrl-C)."""

    backends: Backends
    closed: bool = False
    _waiters: list[Deferred[None]] | None = None

    def close(self) -> Deferred[None]:
        if self.closed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._waiters is None:
            self._waiters = []

            def done(result: object) -> None:
                self.closed = True
                waiters, self._waiters = self._waiters or [], []
                for w in waiters:
                    w.callback(None)

            self._waiters.append(waiter)
            stopping = self.backends.metadata.stop()
            stopping.addBoth(lambda _: self.backends.stop_storage()).addBoth(done)
        else:
            self._waiters.append(waiter)
        return waiter


@dataclass
class Context:
    args: argparse.Namespace
    uploads: Uploads
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def _bare_jid(text: str) -> str:
    """The bare JID owners are recorded under (``JID.userhost``: normalised)."""
    try:
        jid = JID(text.strip())
    except InvalidFormat as e:
        raise Failed(f"not a JID: {text!r} ({e})", EXIT_USAGE) from None
    if not jid.user:
        raise Failed(f"not a user's JID: {text!r}", EXIT_USAGE)
    return jid.userhost()


# -- the commands ---------------------------------------------------------------


async def cmd_usage(ctx: Context) -> int:
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
        ctx.print(_json(report))
        return EXIT_OK
    if not owners:
        ctx.print("No files are held.")
        return EXIT_OK
    rows = [
        [_owner(owner), str(count), human_size(held)] for owner, (count, held) in owners
    ]
    lines = table(["OWNER", "FILES", "SIZE"], rows, right=(1, 2))
    total = [_plural(len(owners), "owner"), str(files), human_size(size)]
    footer = table(["OWNER", "FILES", "SIZE"], [*rows, total], right=(1, 2))[-1]
    for text in lines:
        ctx.print(text)
    ctx.print("-" * max(len(text) for text in lines))
    ctx.print(footer)
    return EXIT_OK


def _listed_json(record: FileRecord, url: str) -> dict[str, Any]:
    return {
        "name": record.filename,
        "size": record.size,
        "content_type": record.content_type,
        "purpose": record.purpose,
        "uploaded": _iso(uploaded_at(record)),
        "expires": _iso(record.expires),
        "sha256": record.sha256,
        "url": url,
    }


async def cmd_list(ctx: Context) -> int:
    owner = _bare_jid(ctx.args.jid)
    listed = await ctx.uploads.list(owner)
    if ctx.args.json:
        files = [_listed_json(item.record, item.url) for item in listed]
        ctx.print(_json({"owner": owner, "files": files}))
        return EXIT_OK
    if not listed:
        ctx.print(f"{_owner(owner)} has no files.")
        return EXIT_OK
    rows = [
        [
            display(item.record.filename),
            human_size(item.record.size),
            _date(uploaded_at(item.record)),
            _date(item.record.expires),
            item.url,
        ]
        for item in listed
    ]
    header = ["NAME", "SIZE", "UPLOADED (UTC)", "EXPIRES (UTC)", "URL"]
    for text in table(header, rows, right=(1,)):
        ctx.print(text)
    size = sum(item.record.size for item in listed)
    ctx.print(f"{_plural(len(listed), 'file')}, {human_size(size)}")
    return EXIT_OK


def _confirm(ctx: Context, question: str) -> bool:
    """Ask on stderr, read a line from stdin; only y/yes confirms.

    End of input or Ctrl-C is a no.  While asking, Ctrl-C raises
    KeyboardInterrupt (the reactor's handler would only stop the reactor
    once the read returned).
    """
    ctx.err.write(f"{question} [y/N] ")
    ctx.err.flush()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        answer = ctx.stdin.readline()
    except KeyboardInterrupt:
        ctx.err.write("\n")
        answer = ""
    finally:
        signal.signal(signal.SIGINT, previous)
    return answer.strip().lower() in ("y", "yes")


class _HoldCtrlC:
    """Within: the first Ctrl-C only warns; a second one stops the reactor."""

    def __init__(self, ctx: Context, warning: str) -> None:
        self.ctx = ctx
        self.warning = warning
        self.previous: Any = None
        self.pressed = False

    def _handler(self, number: int, frame: FrameType | None) -> None:
        if not self.pressed:
            self.pressed = True
            self.ctx.err.write("\n" + self.warning + "\n")
            self.ctx.err.flush()
        elif callable(self.previous):
            self.previous(number, frame)
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> _HoldCtrlC:
        self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)


async def cmd_delete_user(ctx: Context) -> int:
    owner = _bare_jid(ctx.args.jid)
    held = (await ctx.uploads.usage_by_owner()).get(owner)
    if held is not None and not ctx.args.yes:
        count, size = held
        question = (
            f"Delete all {_plural(count, 'file')} ({human_size(size)}) of "
            f"{_owner(owner)}, "
            "and their upload slots? This cannot be undone."
        )
        if not _confirm(ctx, question):
            ctx.note("Nothing deleted.")
            return EXIT_DECLINED
    progress = Progress(f"Deleting files of {_owner(owner)}", "files", ctx.err)
    # The records go first, in one transaction (Uploads.delete_all), then
    # the files one by one: stopping half-way would leave files without
    # records, which the service adopts at its next start.
    warning = (
        "Still deleting: the records are gone and the remaining files must "
        "follow. Press Ctrl-C again to stop anyway."
    )
    with _HoldCtrlC(ctx, warning):
        deleted = await ctx.uploads.delete_all(owner, progress.update)
    progress.finish()
    if deleted:
        ctx.print(f"Deleted {_plural(deleted, 'file')} and slots of {_owner(owner)}.")
    else:
        ctx.print(f"{_owner(owner)} has no files or slots.")
    return EXIT_OK


async def cmd_take_down(ctx: Context) -> int:
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
    when = _date(uploaded_at(record))
    ctx.print(f"Removed {what} of {_owner(record.owner)}, from {when} UTC.")
    return EXIT_OK


async def cmd_purge_expired(ctx: Context) -> int:
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


COMMANDS: dict[str, Callable[[Context], Awaitable[int]]] = {
    "usage": cmd_usage,
    "list": cmd_list,
    "delete-user": cmd_delete_user,
    "take-down": cmd_take_down,
    "purge-expired": cmd_purge_expired,
}


# -- arguments and the run ------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    # --config is accepted before or after the command.
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the service's TOML configuration file (required)",
    )
    parser = ArgumentParser(
        prog=prog,
        parents=[common],
        description="Operator commands for the httpupload service's stored files.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )

    p = command("usage", "files and bytes every owner holds now, largest first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("list", "one owner's files: name, size, dates, GET URL")
    p.add_argument("jid", metavar="JID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("delete-user", "delete every file and slot of a JID (account removal)")
    p.add_argument("jid", metavar="JID")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p = command("take-down", "remove the file a GET or PUT URL points at")
    p.add_argument("url", metavar="URL")
    p = command("purge-expired", "remove every expired file now")
    p.add_argument(
        "--batch",
        type=_positive,
        default=200,
        metavar="N",
        help="records per batch (default: 200)",
    )
    return parser


@dataclass
class _Run:
    finished: bool = False
    code: int = EXIT_OK


async def _main(reactor: Any, ctx: Context, closer: _Closer, run: _Run) -> None:
    # Ctrl-C stops the reactor without finishing this coroutine: close the
    # store then too, or its (non-daemon) thread would keep the process alive.
    reactor.addSystemEventTrigger("before", "shutdown", closer.close)
    code = EXIT_FAILED
    try:
        await closer.backends.start_storage()
        await ctx.uploads.metadata.start()
        code = await COMMANDS[ctx.args.command](ctx)
    except Failed as e:
        ctx.note(f"httpupload: {e}")
        code = e.code
    except (OSError, sqlite3.Error) as e:
        ctx.note(f"httpupload: error: {e}")
    except Exception:
        traceback.print_exc(file=ctx.err)
    finally:
        await closer.close()
    run.finished, run.code = True, code


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        parser.error("--config FILE is required")
    from twisted.internet import reactor

    try:
        config = load_config(args.config)
        # As root, become the service user first: SQLite's -wal and -shm
        # files made by root would lock the service out of its own database.
        run_as_storage_owner(config)
        uploads, backends = open_uploads(config, reactor)
    except ConfigError as e:
        sys.stderr.write(f"httpupload: config error: {e}\n")
        return EXIT_USAGE
    ctx = Context(args, uploads)
    run = _Run()
    try:
        react(_main, (ctx, _Closer(backends), run))
    except SystemExit:
        pass
    if not run.finished:
        # On a terminal, a progress line may still be open.
        sys.stderr.write(
            ("\n" if _isatty(sys.stderr) else "") + "httpupload: interrupted\n"
        )
        return EXIT_INTERRUPTED
    return run.code
