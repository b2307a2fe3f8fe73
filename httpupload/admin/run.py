"""One run of the operator command: open the stores, run a command, close them.

It builds only the storage, the metadata store and the policy, never
``make_service``: no listener, no XMPP connection, and no start-up clean-up
(``FilesystemStorage.prepare`` would throw away the service's uploads in
flight).  The async work runs under ``twisted.internet.task.react``; the
metadata store's thread (not a daemon) is stopped on every way out.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import react

from httpupload._reactor import IServiceReactor, running_reactor
from httpupload.admin.context import Context
from httpupload.admin.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Failed,
)
from httpupload.admin.output import isatty
from httpupload.admin.parser import build_parser
from httpupload.admin.removal import cmd_delete_user, cmd_purge_expired, cmd_take_down
from httpupload.admin.reports import cmd_list, cmd_usage
from httpupload.backends import Backends, open_backends
from httpupload.config import Config, load_config
from httpupload.errors import ConfigError
from httpupload.owners import Uploads
from httpupload.policy import SlotPolicy
from httpupload.privileges import run_as_storage_owner

__all__ = [
    "COMMANDS",
    "Closer",
    "main",
    "open_uploads",
    "run_command",
]


COMMANDS: dict[str, Callable[[Context], Awaitable[int]]] = {
    "usage": cmd_usage,
    "list": cmd_list,
    "delete-user": cmd_delete_user,
    "take-down": cmd_take_down,
    "purge-expired": cmd_purge_expired,
}


def open_uploads(config: Config, reactor: IServiceReactor) -> tuple[Uploads, Backends]:
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
class Closer:
    """Stops the backends once, whoever asks first (end, or Ctrl-C)."""

    backends: Backends
    closed: bool = False
    _waiters: list[Deferred[None]] | None = None

    def close(self) -> Deferred[None]:
        """Fires once the metadata store, then the storage, are closed."""
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
            # The metadata store, then the storage, each even if the other
            # fails (Backends.close logs the failure).
            self.backends.close().addBoth(done)
        else:
            self._waiters.append(waiter)
        return waiter


async def run_command(ctx: Context) -> int:
    """Run ``ctx.args.command`` on started stores; its exit status.

    ``Failed`` becomes its message and code, a storage or database error one
    line and ``EXIT_FAILED``, anything else a traceback and ``EXIT_FAILED``.
    """
    try:
        return await COMMANDS[ctx.args.command](ctx)
    except Failed as e:
        ctx.note(f"httpupload: {e}")
        return e.code
    except (OSError, sqlite3.Error) as e:
        ctx.note(f"httpupload: error: {e}")
    except Exception:
        traceback.print_exc(file=ctx.err)
    return EXIT_FAILED


@dataclass
class _Run:
    finished: bool = False
    code: int = EXIT_OK


async def _main(
    reactor: IServiceReactor, ctx: Context, closer: Closer, run: _Run
) -> None:
    # Ctrl-C stops the reactor without finishing this coroutine: close the
    # store then too, or its (non-daemon) thread would keep the process alive.
    reactor.addSystemEventTrigger("before", "shutdown", closer.close)
    code = EXIT_FAILED
    try:
        await closer.backends.start()
        code = await run_command(ctx)
    except (OSError, sqlite3.Error) as e:
        ctx.note(f"httpupload: error: {e}")
    except Exception:
        traceback.print_exc(file=ctx.err)
    finally:
        await closer.close()
    run.finished, run.code = True, code


def _parse(argv: Sequence[str] | None, prog: str | None) -> argparse.Namespace:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        parser.error("--config FILE is required")
    return args


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parse(argv, prog)
    reactor = running_reactor()
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
        react(_main, (ctx, Closer(backends), run))
    except SystemExit:
        pass
    if not run.finished:
        # On a terminal, a progress line may still be open.
        sys.stderr.write(
            ("\n" if isatty(sys.stderr) else "") + "httpupload: interrupted\n"
        )
        return EXIT_INTERRUPTED
    return run.code
