"""The operator command's arguments (``cli_args.ArgumentParser``: no abbreviations)."""

from __future__ import annotations

import argparse

from httpupload.admin.exits import EXIT_CODES
from httpupload.cli_args import ArgumentParser

__all__ = ["build_parser", "positive"]


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """``httpupload-admin``'s parser: one subcommand per operation."""
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
        type=positive,
        default=200,
        metavar="N",
        help="records per batch (default: 200)",
    )
    return parser
