"""httpupload-send: upload a file over XMPP (XEP-0363) from the command line.

    httpupload-send --jid me@example.org --password-file F FILE [--to JID]

Logs in as a client (STARTTLS with the certificate checked, then SASL), finds
the upload service of the account's domain, uploads FILE (a progress bar on
stderr when it is a terminal), prints the GET URL on stdout and, with
``--to``, sends it in a chat message with XEP-0066 out-of-band data, so
clients show the file inline.

Exit status: 0 uploaded (and sent); 1 the upload failed (no service, refused,
too large, HTTP error); 2 bad usage (arguments, FILE or the password file
unreadable); 3 could not connect or log in; 130 interrupted. Every error is
one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

from twisted.internet import task
from twisted.internet.interfaces import IReactorCore, IReactorTime, IResolver
from twisted.logger import globalLogBeginner
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from httpupload._units import display, human_size, progress_bar
from httpupload.cli_args import ArgumentParser
from httpupload.client.api import UploadClient
from httpupload.client.errors import UploadError
from httpupload.client.login import (
    DEFAULT_PORT,
    LoginFailed,
    NoCertificateChecks,
    XmppSession,
    login,
    reason_text,
)

__all__ = [
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UPLOAD",
    "EXIT_USAGE",
    "LoginFailed",
    "ProgressBar",
    "XmppSession",
    "login",
    "main",
    "oob_message",
    "render_progress",
]

EXIT_OK = 0
EXIT_UPLOAD = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_INTERRUPTED = 130

PROG = "httpupload-send"
NS_OOB = "jabber:x:oob"


class UsageError(Exception):
    """A bad argument or an unreadable input file: exit status 2."""


# ---- arguments


_PORT = re.compile(r"[0-9]{1,5}")


def _shown(text: str, limit: int = 60) -> str:
    """A value repeated in an error: quoted, escaped and short."""
    shown = repr(text[:limit])
    return shown + "…" if len(text) > limit else shown


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` (port 5222) or ``[IPv6]:PORT``."""
    value = text.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise UsageError(f"--server {_shown(text)}: expected [ADDRESS]:PORT")
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    else:
        host, port_text = value, ""
    if not host:
        raise UsageError(f"--server {_shown(text)}: no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise UsageError(f"--server {_shown(text)}: the port must be 1-65535")
    return host, int(port_text)


def read_password(path: str) -> str:
    """The first line of the password file, without its line break.

    A path that names nothing is not repeated in the error: it may be the
    password itself, given by mistake.
    """
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline()
    except FileNotFoundError as e:
        raise UsageError(
            f"cannot read the password file given to --password-file: {reason_text(e)}"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(
            f"cannot read the password file {path}: {reason_text(e)}"
        ) from e
    password = line.rstrip("\r\n")
    if not password:
        raise UsageError(f"the password file {path} is empty")
    return password


def _jid(option: str, text: str, need_user: bool) -> JID:
    try:
        jid = JID(text)
    except InvalidFormat as e:
        raise UsageError(f"{option} {text!r} is not a JID: {e}") from e
    if need_user and not jid.user:
        raise UsageError(f"{option} {text!r} needs a user part (user@domain)")
    return jid


#: Options whose values never appear in an error message.
SECRET_OPTIONS = ("--password-file",)


def build_parser() -> argparse.ArgumentParser:
    """The options; no abbreviations, secrets kept out of errors (``cli_args``)."""
    parser = ArgumentParser(
        prog=PROG,
        secret_options=SECRET_OPTIONS,
        description="Upload a file over XMPP (XEP-0363 HTTP File Upload) and "
        "print its URL.",
        epilog="Exit status: 0 uploaded, 1 upload failed, 2 bad usage, "
        "3 could not connect or log in, 130 interrupted.",
    )
    parser.add_argument("file", metavar="FILE", help="the file to upload")
    parser.add_argument("--jid", required=True, help="your account, user@domain")
    parser.add_argument(
        "--password-file",
        required=True,
        metavar="F",
        help="a file whose first line is the account's password",
    )
    parser.add_argument(
        "--to", metavar="JID", help="send the URL to JID in a chat message"
    )
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="connect here (default: the domain's _xmpp-client._tcp SRV "
        "record, else the domain on port 5222)",
    )
    parser.add_argument(
        "--insecure-tls",
        action="store_true",
        help="do not check TLS certificates (XMPP and HTTPS); only for "
        "self-signed test servers",
    )
    parser.add_argument(
        "--content-type",
        metavar="TYPE",
        help="the file's media type (default: guessed from its name)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for the server at each step (default 30)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


@dataclass
class Options:
    jid: JID
    password: str
    file: Path
    to: JID | None
    server: tuple[str, int] | None
    insecure_tls: bool
    content_type: str | None
    timeout: float
    quiet: bool


def parse_options(argv: Sequence[str]) -> Options:
    """Parse and check the command line; UsageError (or argparse's exit 2)."""
    args = build_parser().parse_args(argv)
    if not args.timeout > 0:
        raise UsageError("--timeout must be positive")
    path = Path(args.file)
    if not path.is_file():
        problem = "no such file" if not path.exists() else "not a regular file"
        raise UsageError(f"{args.file}: {problem}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{args.file}: not readable")
    return Options(
        jid=_jid("--jid", args.jid, need_user=True),
        password=read_password(args.password_file),
        file=path,
        to=_jid("--to", args.to, need_user=False) if args.to else None,
        server=parse_server(args.server) if args.server else None,
        insecure_tls=args.insecure_tls,
        content_type=args.content_type,
        timeout=args.timeout,
        quiet=args.quiet,
    )


# ---- progress


def render_progress(sent: int, total: int, elapsed: float, width: int = 30) -> str:
    """One progress line: percentage, bar, bytes and rate."""
    fraction = min(1.0, sent / total) if total > 0 else 1.0
    bar = progress_bar(fraction, width)
    rate = f"{human_size(sent / elapsed)}/s" if elapsed > 0 else ""
    return (
        f"{fraction * 100:3.0f}% {bar} {human_size(sent)} / {human_size(total)} {rate}"
    ).rstrip()


@dataclass
class ProgressBar:
    """Redraws one line on a terminal, at most every ``interval`` seconds."""

    stream: TextIO
    interval: float = 0.1
    clock: Callable[[], float] = time.monotonic
    _started: float | None = field(default=None, init=False)
    _drawn: float = field(default=0.0, init=False)
    _width: int = field(default=0, init=False)
    _active: bool = field(default=False, init=False)

    def __call__(self, sent: int, total: int) -> None:
        now = self.clock()
        if self._started is None:
            self._started = now
        if sent < total and self._active and now - self._drawn < self.interval:
            return
        self._drawn = now
        self._active = True
        line = render_progress(sent, total, now - self._started)
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write(f"\r{line}{pad}")
        self.stream.flush()

    def finish(self) -> None:
        """End the line (if anything was drawn)."""
        if self._active:
            self.stream.write("\n")
            self.stream.flush()
            self._active = False


def oob_message(to: JID, url: str) -> domish.Element:
    """A chat message with ``url`` as its body and as XEP-0066 OOB data."""
    message = domish.Element((None, "message"))
    message["to"] = to.full()
    message["type"] = "chat"
    message.addUniqueId()
    message.addElement("body", content=url)
    oob = message.addElement((NS_OOB, "x"))
    oob.addElement("url", content=url)
    return message


# ---- the command


#: The longest error line said; a server's error text may be longer.
MAX_ERROR_LINE = 1000


def _say(text: str) -> None:
    """One bounded line on stderr; text from the server (error texts) escaped."""
    line = display(" ".join(text.split()))
    if len(line) > MAX_ERROR_LINE:
        line = line[:MAX_ERROR_LINE] + "…"
    sys.stderr.write(f"{PROG}: {line}\n")
    sys.stderr.flush()


async def run(
    reactor: IReactorTime, options: Options, resolver: IResolver | None = None
) -> tuple[int, str | None]:
    """Log in, upload, print the URL, send it: the exit status and any error.

    ``resolver`` answers the SRV lookup when no ``--server`` is given (by
    default the process's own resolver).
    """
    try:
        session = await login(
            reactor,
            options.jid,
            options.password,
            server=options.server,
            insecure_tls=options.insecure_tls,
            timeout=options.timeout,
            resolver=resolver,
        )
    except LoginFailed as e:
        return EXIT_CONNECT, str(e)
    bar = None
    if not options.quiet and sys.stderr.isatty():
        bar = ProgressBar(sys.stderr)
    uploader = UploadClient(
        reactor,
        session.manager,
        timeout=options.timeout,
        idle_timeout=max(options.timeout, 60.0),
        tls_policy=NoCertificateChecks() if options.insecure_tls else None,
    )
    try:
        url = await uploader.upload(
            options.file,
            domain=options.jid.host,
            content_type=options.content_type,
            progress=bar,
        )
    except UploadError as e:
        failed: tuple[int, str | None] = (EXIT_UPLOAD, e.text)
    except OSError as e:
        failed = (EXIT_USAGE, f"{options.file}: {reason_text(e)}")
    else:
        failed = (EXIT_OK, None)
    finally:
        if bar is not None:
            bar.finish()
    if failed[0] == EXIT_OK:
        print(display(url), flush=True)
        if options.to is not None:
            session.send(oob_message(options.to, url))
    await session.close()
    return failed


async def _main(
    reactor: IReactorTime, options: Options, state: dict[str, bool]
) -> None:
    def shutting_down() -> None:
        # Ctrl-C (or SIGTERM) stops the reactor, which then drops the
        # connection: that is the interruption, not a network failure.
        if not state["done"]:
            state["interrupted"] = True

    IReactorCore(reactor).addSystemEventTrigger("before", "shutdown", shutting_down)
    try:
        code, problem = await run(reactor, options)
    except Exception as e:  # pragma: no cover - a bug, still said in one line
        code, problem = EXIT_UPLOAD, f"unexpected error: {type(e).__name__}: {e}"
    finally:
        state["done"] = True
    if state.get("interrupted"):
        code, problem = EXIT_INTERRUPTED, "interrupted"
    if problem:
        _say(problem)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``httpupload-send`` console script."""
    try:
        options = parse_options(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        _say(str(e))
        raise SystemExit(EXIT_USAGE) from None
    # Twisted writes critical log events (a certificate it could not check,
    # with a traceback) to stderr until logging begins: errors here are ours
    # to say, in one line.
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    state = {"done": False}
    try:
        task.react(_main, (options, state))
    except SystemExit as e:
        if not state["done"]:
            _say("interrupted")
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise SystemExit(e.code) from None
    raise SystemExit(EXIT_OK)  # pragma: no cover - react always exits


if __name__ == "__main__":
    main()
