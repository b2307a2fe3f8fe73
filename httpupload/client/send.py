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

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, TextIO

from twisted.internet import task
from twisted.internet.interfaces import IReactorCore, IReactorTime, IResolver
from twisted.logger import globalLogBeginner
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from httpupload._units import display, human_size, progress_bar
from httpupload.client.api import UploadClient
from httpupload.client.arguments import (
    PROG,
    Options,
    UsageError,
    parse_options,
)
from httpupload.client.errors import UploadError
from httpupload.client.login import (
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

NS_OOB = "jabber:x:oob"


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
