"""What httpupload asks of a reactor, declared once.

The service tree is built on whatever reactor ``tap.py`` (or an embedder)
hands in: listeners from endpoint strings (TCP, TLS, UNIX sockets), the
XEP-0114 link through a host name, timers, the thread pool the filesystem
backend reads in, and system event triggers.  ``IServiceReactor`` is the
union of the Twisted interfaces that covers, so the assembly code
(``service``, ``backends``, ``assembly``) is typed against one name instead
of ``Any``.  A part that needs less takes less: the expiry sweep takes an
``IReactorTime``, and so do a web site and the client.

The global reactor provides every one of these interfaces but does not
declare the union (no reactor can: Twisted does not know this name), so
``running_reactor()`` names it once, with a check.  A test reactor would
declare it with ``@implementer(IServiceReactor)``; ``MemoryReactorClock``
alone lacks the thread pool, and the service's parts are tested on the
narrower interfaces they take.

Importing this module loads no reactor and nothing of httpupload's server.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUNIX,
)

# Each interface the union joins, for a runtime check of a reactor that does
# not declare the union itself.
PARTS = (
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorUNIX,
    IReactorThreads,
    IReactorPluggableNameResolver,
)


class IServiceReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorUNIX,
    IReactorThreads,
    IReactorPluggableNameResolver,
):
    """A reactor able to run the whole service: listen, connect, time, threads."""


def as_service_reactor(reactor: object) -> IServiceReactor:
    """``reactor`` typed as an ``IServiceReactor``, once checked to provide
    every part of it (the global reactor does, without declaring the union)."""
    if not IServiceReactor.providedBy(reactor):
        missing = [i.__name__ for i in PARTS if not i.providedBy(reactor)]
        if missing:
            raise TypeError(f"{reactor!r} does not provide {', '.join(missing)}")
    return cast(IServiceReactor, reactor)


def running_reactor() -> IServiceReactor:
    """The global reactor (installing the default one if none is yet)."""
    from twisted.internet import reactor

    return as_service_reactor(reactor)


__all__ = ["IServiceReactor", "as_service_reactor", "running_reactor"]
