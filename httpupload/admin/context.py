"""What every operator command is given: its arguments, the uploads, the terminal.

``Context`` carries the streams and the process's signal calls, so a command
runs in a test on ``StringIO`` streams and a fake ``signal`` module, and in
``httpupload-admin`` on the real ones.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol, TextIO

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from httpupload.admin.exits import EXIT_USAGE, Failed
from httpupload.owners import Uploads

__all__ = ["Context", "HoldCtrlC", "SignalCalls", "bare_jid", "confirm"]

Handler = Callable[[int, FrameType | None], Any] | int | None


class SignalCalls(Protocol):
    """The part of ``signal`` the commands use (the module; a fake in tests)."""

    @property
    def SIGINT(self) -> int:
        """The number of the interrupt signal."""

    def signal(self, signalnum: int, handler: Any, /) -> Handler: ...
    def default_int_handler(self, signalnum: int, frame: FrameType | None, /) -> Any:
        """Raise KeyboardInterrupt."""


@dataclass
class Context:
    """One command's arguments, the uploads it works on, and its terminal."""

    args: argparse.Namespace
    uploads: Uploads
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    signals: SignalCalls = signal

    def print(self, text: str = "") -> None:
        """A line of the command's output (stdout)."""
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """A line for the operator, not for a pipe (stderr)."""
        self.err.write(text + "\n")
        self.err.flush()


def bare_jid(text: str) -> str:
    """The bare JID owners are recorded under (``JID.userhost``: normalised)."""
    try:
        jid = JID(text.strip())
    except InvalidFormat as e:
        raise Failed(f"not a JID: {text!r} ({e})", EXIT_USAGE) from None
    if not jid.user:
        raise Failed(f"not a user's JID: {text!r}", EXIT_USAGE)
    return str(jid.userhost())


def confirm(ctx: Context, question: str) -> bool:
    """Ask on stderr, read a line from stdin; only y/yes confirms.

    End of input or Ctrl-C is a no.  While asking, Ctrl-C raises
    KeyboardInterrupt (the reactor's handler would only stop the reactor
    once the read returned).
    """
    ctx.err.write(f"{question} [y/N] ")
    ctx.err.flush()
    signals = ctx.signals
    previous = signals.signal(signals.SIGINT, signals.default_int_handler)
    try:
        answer = ctx.stdin.readline()
    except KeyboardInterrupt:
        ctx.err.write("\n")
        answer = ""
    finally:
        signals.signal(signals.SIGINT, previous)
    return answer.strip().lower() in ("y", "yes")


class HoldCtrlC:
    """Within: the first Ctrl-C only warns; a second one stops the reactor."""

    def __init__(self, ctx: Context, warning: str) -> None:
        self.ctx = ctx
        self.warning = warning
        self.previous: Handler = None
        self.pressed = False

    def handler(self, number: int, frame: FrameType | None) -> None:
        """The SIGINT handler while held: warn once, then pass it on."""
        if not self.pressed:
            self.pressed = True
            self.ctx.err.write("\n" + self.warning + "\n")
            self.ctx.err.flush()
        elif callable(self.previous):
            self.previous(number, frame)
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> HoldCtrlC:
        signals = self.ctx.signals
        self.previous = signals.signal(signals.SIGINT, self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signals = self.ctx.signals
        signals.signal(signals.SIGINT, self.previous)
