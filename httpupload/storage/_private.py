"""Staging copy of what ``httpupload._twisted_private`` gets appended (#11, H3b).

The twisted.web channel behind a ``Sink``, and the internals of Twisted's
TCP transport that ``sendfile`` relies on.  Moved into
``httpupload._twisted_private`` once that module is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet

# -- a Sink's twisted.web connection, and Twisted's TCP transport internals --
#
# What is touched, and where Twisted defines it:
#
# - ``Request.channel`` (twisted/web/http.py): the request's ``HTTPChannel``,
#   None once the connection is gone; its ``transport`` (the connection),
#   ``callLater`` (``TimeoutMixin``'s clock, the site's reactor) and
#   ``site.timeOut`` (the idle timeout the ``Site`` was given; the channel's
#   own copy is None while a request is answered);
# - ``tcp.Connection.dataBuffer``, ``.offset`` and ``._tempDataLen``
#   (twisted/internet/abstract.py ``FileDescriptor``): what the transport
#   still has to send.  ``sendfile`` writes behind the transport's back, so
#   the response head must be out of that buffer first;
# - ``tcp.Connection.reactor``: the reactor the socket is registered with,
#   which watches our duplicate of the socket for writability.


def connection_of(sink: object) -> object | None:
    """The transport of the sink's connection; None once it is gone."""
    return getattr(getattr(sink, "channel", None), "transport", None)


def watchdog_clock(
    sink: object,
) -> tuple[Callable[[float, Callable[[], None]], IDelayedCall], float] | None:
    """The clock and idle timeout (seconds) of the sink's connection, if it has both.

    None for a sink without a channel (gone, or not twisted.web's) and for
    a site whose timeout is off.
    """
    channel = getattr(sink, "channel", None)
    call_later = getattr(channel, "callLater", None)
    timeout = getattr(getattr(channel, "site", None), "timeOut", None)
    if call_later is None or not isinstance(timeout, int | float) or timeout <= 0:
        return None
    clock = cast(Callable[[float, Callable[[], None]], IDelayedCall], call_later)
    return clock, float(timeout)


def plain_tcp_transport(sink: object) -> tcp.Connection | None:
    """The sink's TCP transport if nothing sits between it and the socket.

    None over TLS, HTTP/2 or anything else, and if the transport lacks the
    buffer attributes ``head_flushed`` reads (a Twisted that changed them).
    """
    transport = connection_of(sink)
    if not isinstance(transport, tcp.Connection):
        return None
    if not all(
        hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")
    ):
        return None
    return transport


def head_flushed(transport: tcp.Connection) -> bool:
    """Whether the transport has sent everything written to it (the head)."""
    return len(transport.dataBuffer) == transport.offset and not transport._tempDataLen


def transport_reactor(transport: tcp.Connection) -> IReactorFDSet:
    """The reactor the transport's socket is registered with."""
    return transport.reactor
