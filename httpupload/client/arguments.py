"""The command line of ``httpupload-send``: options, checked, as ``Options``.

Every problem is a ``UsageError`` (exit status 2) saying it in one line; the
parser takes no abbreviations and never repeats a secret (``cli_args``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from httpupload.cli_args import ArgumentParser
from httpupload.client.login import DEFAULT_PORT, reason_text

__all__ = [
    "PROG",
    "SECRET_OPTIONS",
    "Options",
    "UsageError",
    "build_parser",
    "parse_options",
    "parse_server",
    "read_password",
]

PROG = "httpupload-send"


class UsageError(Exception):
    """A bad argument or an unreadable input file: exit status 2."""


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
