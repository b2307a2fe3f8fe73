"""Builds the whole service from a ``Config``: named children under one MultiService."""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.server import Site
from wokkel import disco, generic, ping

from httpupload.config import Config
from httpupload.errors import ConfigError
from httpupload.expiry import Maintenance
from httpupload.keys import load_or_create_signing_key
from httpupload.metadata.sqlite import FILE_NAME as METADATA_FILE
from httpupload.metadata.sqlite import SQLiteMetadataStore
from httpupload.metrics import Metrics, MetricsResource
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver
from httpupload.xmpp.adhoc import AdHocHandler
from httpupload.xmpp.component import ComponentService
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.keepalive import LinkWatchdog

log = Logger()


class DrainService(Service):
    """On stop: refuse new uploads, give those in flight ``grace`` seconds."""

    def __init__(self, receiver: UploadReceiver, grace: float) -> None:
        self.receiver = receiver
        self.grace = grace

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.receiver.drain(self.grace)


class HttpUploadService(MultiService):
    """The root service.

    Turns a port that cannot be bound into one clear line, and stops the
    ``expiry`` child (which owns the metadata store) only after every other
    child has stopped: draining uploads still record their files.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        children = list(self)
        last = [s for s in children if s.name == "expiry"]
        first = [s for s in reversed(children) if s.name != "expiry"]

        async def stop() -> None:
            await DeferredList([maybeDeferred(s.stopService) for s in first])
            for service in last:
                await maybeDeferred(service.stopService)

        return ensureDeferred(stop())

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"httpupload: cannot listen on {e.interface or '*'}:{e.port}: "
                f"{e.socketError} (see [http] listen and [metrics] listen)"
            ) from None


def _listener(key: str, description: str, factory: Site, reactor: Any) -> Service:
    """A listening service named after its key's table; bad strings name the key."""
    try:
        service = strports.service(description, factory, reactor=reactor)
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise ConfigError(key, f"not a usable endpoint description: {e}") from None
    service.setName(key.split("]")[0].strip("["))
    return service


def make_service(config: Config, reactor: Any) -> MultiService:
    """The service tree: ``expiry``, ``http``, ``uploads`` (the drain), ``xmpp``.

    Start-up checks that can fail (storage folder, signing key, metadata
    schema) run here, before anything listens, and raise ``ConfigError``
    naming the key.
    """
    storage = FilesystemStorage(config.storage.path, reactor, reactor.getThreadPool())
    try:
        leftovers = storage.prepare()
    except OSError as e:
        raise ConfigError(
            "[storage] path", f"cannot use {config.storage.path}: {e.strerror}"
        ) from None
    if leftovers:
        log.info("Removed {count} partial uploads left by a crash", count=leftovers)
    key = config.http.signing_key or load_or_create_signing_key(config.storage.path)
    signer = SlotSigner(key, reactor)
    metadata = SQLiteMetadataStore(config.storage.path / METADATA_FILE, reactor)
    try:
        metadata.open()
    except (sqlite3.Error, RuntimeError) as e:
        raise ConfigError(
            "[storage] path", f"cannot use {metadata.path}: {e}"
        ) from None
    policy = SlotPolicy.from_config(config)

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
    root = HttpUploadService()
    metrics = Metrics()
    expiry = Maintenance(metadata, storage, policy, reactor, metrics=metrics)
    expiry.setName("expiry")
    expiry.setServiceParent(root)

    h = config.http
    receiver = UploadReceiver(
        signer,
        storage,
        reactor,
        max_uploads_per_address=h.max_uploads_per_address,
        metadata=metadata,
    )
    site = UploadSite(
        receiver,
        storage,
        reactor,
        idle_timeout=h.idle_timeout,
        header_timeout=h.header_timeout,
        min_upload_rate=h.min_upload_rate,
        trusted_proxies=h.trusted_proxies,
        metadata=metadata,
        metrics=metrics,
    )
    _listener("[http] listen", config.http.listen, site, reactor).setServiceParent(root)

    # On stop, MultiService stops every child at once (in reverse order) and
    # waits for them all: the port closes to new connections while uploads
    # in flight get their grace period and their answers.
    drain = DrainService(receiver, h.shutdown_grace)
    drain.setName("uploads")
    drain.setServiceParent(root)

    c = config.component
    handlers = [
        generic.FallbackHandler(),
        disco.DiscoHandler(),
        ping.PingHandler(),
        LinkWatchdog(
            reactor,
            target=c.jid.partition(".")[2] or c.jid,
            sender=c.jid,
            link_timeout=c.link_timeout,
        ),
        UploadHandler(
            policy,
            signer,
            config.http.public_url,
            config.http.get_url,
            config.limits.slot_lifetime,
            metadata=metadata,
            free_space=storage.free_space,
            metrics=metrics,
        ),
        AdHocHandler.build(metadata, storage, policy, config.http.get_url, reactor),
    ]
    endpoint = HostnameEndpoint(reactor, c.server_host, c.server_port, timeout=30)
    xmpp = ComponentService(
        reactor,
        endpoint,
        c.jid,
        c.secret,
        handlers,
        server_name=f"{c.server_host}:{c.server_port}",
    )
    xmpp.setName("xmpp")
    xmpp.setServiceParent(root)

    metrics.uploads_in_flight.set_function(lambda: receiver.in_flight)
    metrics.xmpp_connected.set_function(lambda: 1 if xmpp.online else 0)
    if config.metrics.listen:

        def health() -> dict[str, object]:
            online = xmpp.online
            return {
                "status": "ok" if online else "degraded",
                "xmpp": "online" if online else "offline",
                "uploads_in_flight": receiver.in_flight,
            }

        metrics_site = Site(MetricsResource(metrics, health), reactor=reactor)
        metrics_site.noisy = False
        _listener(
            "[metrics] listen", config.metrics.listen, metrics_site, reactor
        ).setServiceParent(root)
    return root
