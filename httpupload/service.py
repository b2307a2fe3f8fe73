"""Builds the whole service from a ``Config``: a tree whose shape is its lifecycle.

::

    httpupload (HttpUploadService)
    ├── backends    opens storage and metadata first, closes them last
    │   ├── expiry      reconciles, sweeps; outlives what it holds records for
    │   └── serving     what uses the stores, stopped together:
    │       ├── uploads     the drain: refuses new PUTs, lets those in flight end
    │       ├── http        the listener                 (role "http")
    │       └── xmpp        the XEP-0114 component       (role "component")
    └── metrics     /metrics and /health, when [metrics] listen is set

Children start in that order and stop in the reverse one (``backends``
explains how); every name is found from the root with ``getServiceNamed``.
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.server import Site

from httpupload._reactor import IServiceReactor
from httpupload.assembly import DrainService, Node, attach_handlers, open_node
from httpupload.backends import STALE_UPLOAD_SWEEP, BackendsService
from httpupload.config import Config
from httpupload.errors import ConfigError
from httpupload.metrics import MetricsResource
from httpupload.web.site import MetricsSite
from httpupload.xmpp.component import ComponentService

__all__ = [
    "STALE_UPLOAD_SWEEP",
    "BackendsService",
    "DrainService",
    "HttpUploadService",
    "make_service",
]

log = Logger()


def _walk(service: MultiService) -> Iterator[IService]:
    for child in service:
        yield child
        if isinstance(child, MultiService):
            yield from _walk(child)


class HttpUploadService(MultiService):
    """The root service.

    Turns a port that cannot be bound into one clear line, and finds any
    named service of its tree (names are unique in it), so callers need not
    know where in the tree a service sits.
    """

    def getServiceNamed(self, name: str) -> IService:
        for service in _walk(self):
            if service.name == name:
                return service
        raise KeyError(name)

    def names(self) -> list[str]:
        """Every named service of the tree, in start order."""
        return [s.name for s in _walk(self) if s.name]

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"httpupload: cannot listen on {e.interface or '*'}:{e.port}: "
                f"{e.socketError} (see [http] listen and [metrics] listen)"
            ) from None


def _listener(
    key: str, description: str, factory: Site, reactor: IServiceReactor
) -> Service:
    """A listening service named after its key's table; bad strings name the key."""
    try:
        service = strports.service(description, factory, reactor=reactor)
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise ConfigError(key, f"not a usable endpoint description: {e}") from None
    service.setName(key.split("]")[0].strip("["))
    return service


def _warn_plain_http(config: Config) -> None:
    urls = {"public_url": config.http.public_url, "get_url": config.http.get_url}
    for name, url in urls.items():
        if not url.startswith("https://") and (
            name == "public_url" or url != urls["public_url"]
        ):
            log.warn(
                "[http] {key} is not HTTPS; XEP-0363 requires TLS, so put a "
                "TLS-terminating proxy in front or use an ssl: listener",
                key=name,
            )


def make_service(config: Config, reactor: IServiceReactor) -> HttpUploadService:
    """The service tree of the module docstring, by the node's roles.

    Start-up checks that can fail (storage, signing key, metadata schema) run
    here, before anything listens, and raise ``ConfigError`` naming the key.
    """
    node = open_node(config, reactor)
    _warn_plain_http(config)
    root = HttpUploadService()
    root.setName("httpupload")
    node.service.setServiceParent(root)
    if config.node.runs_http:
        site = node.upload_site()
        _listener("[http] listen", config.http.listen, site, reactor).setServiceParent(
            node.serving
        )
    xmpp = _component(node) if config.node.runs_component else None
    if config.metrics.listen:
        _metrics(node, xmpp).setServiceParent(root)
    return root


def _component(node: Node) -> ComponentService:
    c = node.config.component
    assert c.secret is not None
    endpoint = HostnameEndpoint(node.reactor, c.server_host, c.server_port, timeout=30)
    xmpp = ComponentService(
        node.reactor,
        endpoint,
        c.jid,
        c.secret,
        [],
        server_name=f"{c.server_host}:{c.server_port}",
    )
    attach_handlers(xmpp.streams, node, watchdog=True)
    xmpp.setName("xmpp")
    xmpp.setServiceParent(node.serving)
    node.metrics.watch_component(lambda: xmpp.state)
    return xmpp


def _metrics(node: Node, xmpp: ComponentService | None) -> Service:
    config = node.config
    receiver = node.upload_receiver() if config.node.runs_http else None

    def health() -> dict[str, object]:
        report: dict[str, object] = {"status": "ok", "node": config.node.name}
        if xmpp is not None:
            state = xmpp.state
            report["xmpp"] = state
            if state == "offline":
                report["status"] = "degraded"
        if receiver is not None:
            report["uploads_in_flight"] = receiver.in_flight
        return report

    site = MetricsSite(
        MetricsResource(node.metrics, health),
        node.reactor,
        idle_timeout=config.http.idle_timeout,
    )
    return _listener("[metrics] listen", config.metrics.listen, site, node.reactor)
