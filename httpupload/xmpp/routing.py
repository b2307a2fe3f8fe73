"""A component stream that hands known IQ requests straight to their handler.

twisted.words dispatches every incoming stanza by evaluating the XPath query
of every observer on the stream: with disco, ping, ad-hoc commands, the
fallback handler, the IQ response tracker and the upload handler that is about
twenty queries per stanza, each a few function calls deep, plus wokkel's
``IQHandlerMixin`` matching its own queries again.  Slot requests are almost
all the traffic a busy upload component sees, so ``RoutingXmlStream`` looks at
the IQ's type and its one payload element and, when a handler registered that
exact triple, calls it directly.  Everything else (and any IQ with more than
one payload element, which RFC 6120 forbids anyway) takes the usual XPath path,
so a route only ever shortens the way to the handler that would have answered.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

IqRoute = tuple[str, str, str]
"""An IQ ``type``, and the namespace and name of its payload element."""


def route_of(iq: domish.Element) -> IqRoute | None:
    """The route key of an IQ stanza; None if it has not exactly one payload."""
    payload: domish.Element | None = None
    for child in iq.children:
        if isinstance(child, domish.Element):
            if payload is not None:
                return None
            payload = child
    if payload is None:
        return None
    return (iq.getAttribute("type") or "", payload.uri or "", payload.name)


class RoutingXmlStream(xmlstream.XmlStream):
    """An ``XmlStream`` with a dictionary lookup in front of XPath dispatch."""

    def __init__(self, authenticator: xmlstream.Authenticator) -> None:
        super().__init__(authenticator)
        self.iq_routes: dict[IqRoute, Callable[[domish.Element], None]] = {}

    def route_iq(
        self,
        iq_type: str,
        namespace: str,
        name: str,
        handler: Callable[[domish.Element], None],
    ) -> None:
        """Send IQs of ``iq_type`` whose payload is ``{namespace}name`` to ``handler``.

        The handler must answer the IQ itself, and never raise: nothing else
        sees a routed stanza.
        """
        self.iq_routes[(iq_type, namespace, name)] = handler

    def onElement(self, element: domish.Element) -> None:
        if self.iq_routes and element.name == "iq":
            key = route_of(element)
            handler = self.iq_routes.get(key) if key is not None else None
            if handler is not None:
                handler(element)
                return
        super().onElement(element)
