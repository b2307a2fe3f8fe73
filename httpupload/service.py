"""Builds the whole service from a ``Config``: named children under one MultiService."""

from __future__ import annotations

from typing import Any, cast

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Site
from wokkel import disco, generic, ping

from httpupload.backends import Backends, open_backends, signing_keys
from httpupload.config import Config
from httpupload.direct import DirectStorage, DirectUrls
from httpupload.errors import ConfigError
from httpupload.expiry import Maintenance
from httpupload.metadata import MetadataStore
from httpupload.metadata.cache import CachedRecords
from httpupload.metrics import Metrics, MetricsResource
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.storage import Storage
from httpupload.web.site import MetricsSite, UploadSite
from httpupload.web.uploads import UploadReceiver
from httpupload.xmpp.adhoc import AdHocHandler
from httpupload.xmpp.component import ComponentService
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.keepalive import LinkWatchdog

log = Logger()

# How often to look for multipart uploads left in an object store.
STALE_UPLOAD_SWEEP = 3600.0


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
    ``expiry`` child (which owns the metadata store), then ``storage``, only
    after every other child has stopped: draining uploads still store and
    record their files.
    """

    LAST = ("expiry", "storage")

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        children = list(self)
        last = [s for name in self.LAST for s in children if s.name == name]
        first = [s for s in reversed(children) if s.name not in self.LAST]

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


class BackendsService(Service):
    """Starts the storage backend (an object store resolves credentials) and
    sweeps multipart uploads a crashed node left behind; stops it last."""

    def __init__(self, backends: Backends, reactor: Any) -> None:
        self.backends = backends
        self.reactor = reactor
        self._sweeper: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        d = self.backends.start_storage()
        d.addErrback(lambda f: log.failure("Starting the storage backend failed", f))
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._sweeper.start(STALE_UPLOAD_SWEEP, now=False)

    def _sweep(self) -> Deferred[Any]:
        def done(count: int) -> None:
            if count:
                log.info("Aborted {count} stale multipart uploads", count=count)

        d = self.backends.abort_stale_uploads()
        d.addCallback(done)
        d.addErrback(
            lambda f: log.failure("Sweeping stale multipart uploads failed", f)
        )
        return d

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        return self.backends.stop_storage()


def _direct_storage(config: Config, storage: Storage) -> DirectStorage | None:
    """The storage, when slots go straight to it (S3 direct mode)."""
    s3 = config.storage.s3
    if s3 is None or s3.mode != "direct":
        return None
    return cast(DirectStorage, storage)


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


def make_service(config: Config, reactor: Any) -> MultiService:
    """The service tree: ``storage``, ``expiry``, then by role ``http`` and
    ``uploads`` (the drain), ``xmpp``; ``metrics``.

    Start-up checks that can fail (storage, signing key, metadata schema) run
    here, before anything listens, and raise ``ConfigError`` naming the key.
    """
    backends = open_backends(config, reactor)
    storage = backends.storage
    # Downloads of files stored or fetched lately skip the record lookup.
    metadata = CachedRecords(backends.metadata)
    signer = SlotSigner(signing_keys(config), reactor)
    policy = SlotPolicy.from_config(config)
    roles = config.node.roles
    _warn_plain_http(config)

    root = HttpUploadService()
    metrics = Metrics()
    storage_service = BackendsService(backends, reactor)
    storage_service.setName("storage")
    storage_service.setServiceParent(root)
    direct = _direct_storage(config, storage)
    expiry = Maintenance(
        metadata,
        storage,
        policy,
        reactor,
        metrics=metrics,
        reconcile_at_start=config.storage.backend == "filesystem",
        direct=direct,
    )
    expiry.setName("expiry")
    expiry.setServiceParent(root)

    receiver: UploadReceiver | None = None
    if "http" in roles:
        receiver = _http(config, root, reactor, signer, storage, metadata, metrics)
    xmpp: ComponentService | None = None
    if "component" in roles:
        xmpp = _component(
            config, root, reactor, signer, storage, metadata, policy, metrics, direct
        )

    if receiver is not None:
        in_flight = receiver
        metrics.uploads_in_flight.set_function(lambda: in_flight.in_flight)
        # Unused slots are swept minutes after they expire: an upload still
        # arriving keeps its record by a hold.
        expiry.in_flight = receiver.slot_ids
    if xmpp is not None:
        component = xmpp
        metrics.watch_component(lambda: component.state)
    if config.metrics.listen:

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

        metrics_site = MetricsSite(
            MetricsResource(metrics, health),
            reactor,
            idle_timeout=config.http.idle_timeout,
        )
        _listener(
            "[metrics] listen", config.metrics.listen, metrics_site, reactor
        ).setServiceParent(root)
    return root


def _http(
    config: Config,
    root: MultiService,
    reactor: Any,
    signer: SlotSigner,
    storage: Storage,
    metadata: MetadataStore,
    metrics: Metrics,
) -> UploadReceiver:
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
    _listener("[http] listen", h.listen, site, reactor).setServiceParent(root)
    # On stop, MultiService stops every child at once (in reverse order) and
    # waits for them all: the port closes to new connections while uploads
    # in flight get their grace period and their answers.
    drain = DrainService(receiver, h.shutdown_grace)
    drain.setName("uploads")
    drain.setServiceParent(root)
    return receiver


def _component(
    config: Config,
    root: MultiService,
    reactor: Any,
    signer: SlotSigner,
    storage: Storage,
    metadata: MetadataStore,
    policy: SlotPolicy,
    metrics: Metrics,
    direct: DirectStorage | None,
) -> ComponentService:
    c = config.component
    assert c.secret is not None
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
            direct_urls=DirectUrls(direct) if direct is not None else None,
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
    return xmpp
