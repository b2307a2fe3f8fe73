"""One node's parts, built once from a ``Config``, for the service and embedders.

``open_node`` opens what every role of a node shares (the stores, the
signing keys, the policy, the metrics) and gives it a lifecycle: the node's
``service`` (a ``backends.BackendsService``) opens the stores before its
children start and closes them after they stopped, with the expiry sweep as
its first child.  What uses the stores goes under ``node.serving``, whose
children stop together, before the sweep.  ``attach_handlers`` puts the
whole XMPP handler set (disco, ping, the slot handler with quotas and
metrics, the owners' ad-hoc commands, and, on an XEP-0114 link, the
watchdog) on any wokkel handler parent: the component ``service.py`` runs,
or an ``InternalComponent`` on a deployment's own router::

    node = open_node(config, reactor)
    node.service.setServiceParent(application)
    upload = InternalComponent(router, config.component.jid)
    attach_handlers(upload, node)
    upload.setServiceParent(node.serving)
    adopt(site, node.upload_receiver())
    mount(site, b"upload", node.upload_resource())

(docs/examples/httpupload.tac, docs/embedding.md).
"""

from __future__ import annotations

from typing import cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from wokkel import disco, generic, ping
from wokkel.subprotocols import XMPPHandler

from httpupload._reactor import IServiceReactor
from httpupload.backends import Backends, BackendsService, open_backends, signing_keys
from httpupload.config import Config
from httpupload.expiry import Maintenance
from httpupload.metadata import MetadataStore
from httpupload.metadata.cache import RecordCache
from httpupload.metrics import Metrics
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.storage import Storage
from httpupload.storage.s3.direct import DirectStorage, DirectUrls
from httpupload.web.resource import UploadResource
from httpupload.web.settings import WebSettings
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver
from httpupload.xmpp.adhoc import AdHocHandler
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.keepalive import LinkWatchdog

__all__ = ["DrainService", "Node", "attach_handlers", "open_node"]


class DrainService(Service):
    """On stop: refuse new uploads, give those in flight ``grace`` seconds."""

    def __init__(self, receiver: UploadReceiver, grace: float) -> None:
        self.receiver = receiver
        self.grace = grace

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.receiver.drain(self.grace)


class Node:
    """What every role of one node shares, and the service that owns the stores.

    ``service`` (named ``backends``) is the node's lifecycle: its children
    are ``expiry`` and ``serving``; add every service that uses the stores
    (listeners, components) to ``serving``.
    """

    def __init__(
        self,
        config: Config,
        reactor: IServiceReactor,
        backends: Backends,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.backends = backends
        self.storage: Storage = backends.storage
        self.metadata: MetadataStore = backends.metadata
        # Downloads of files stored or fetched lately skip the record lookup.
        self.records = RecordCache(backends.metadata)
        self.signer = SlotSigner(signing_keys(config), reactor)
        self.policy = SlotPolicy.from_config(config)
        self.metrics = metrics if metrics is not None else Metrics()
        self.direct = _direct_storage(config, self.storage)
        self.service = BackendsService(backends, reactor)
        # First child: it stops after ``serving``, so the records of uploads
        # still arriving are held while they drain.
        self.expiry = Maintenance(
            self.metadata,
            self.storage,
            self.policy,
            reactor,
            metrics=self.metrics,
            reconcile_at_start=config.storage.backend == "filesystem",
            direct=self.direct,
        )
        self.expiry.setName("expiry")
        self.expiry.setServiceParent(self.service)
        # Stopped at once, together: a port closes to new connections while
        # the uploads in flight get their grace period and their answers.
        self.serving = MultiService()
        self.serving.setName("serving")
        self.serving.setServiceParent(self.service)
        self._receiver: UploadReceiver | None = None

    def upload_receiver(self) -> UploadReceiver:
        """The receiver of this node's PUTs, made on the first call.

        With it come its drain (the ``uploads`` service under ``serving``),
        the sweep's hold on its uploads in flight, and their gauge.
        """
        if self._receiver is not None:
            return self._receiver
        h = self.config.http
        receiver = UploadReceiver(
            self.signer,
            self.storage,
            self.reactor,
            max_uploads_per_address=h.max_uploads_per_address,
            metadata=self.metadata,
            records=self.records,
            partial_lifetime=h.partial_lifetime,
            recheck=self.policy.recheck,
        )
        drain = DrainService(receiver, h.shutdown_grace)
        drain.setName("uploads")
        drain.setServiceParent(self.serving)
        # Unused slots are swept minutes after they expire: an upload still
        # arriving keeps its record by a hold.
        self.expiry.in_flight = receiver.slot_ids
        self.metrics.uploads_in_flight.set_function(lambda: receiver.in_flight)
        self._receiver = receiver
        return receiver

    def upload_site(self) -> UploadSite:
        """The whole HTTP side as its own ``Site`` (the ``[http]`` settings)."""
        return UploadSite(
            self.upload_receiver(),
            self.storage,
            self.reactor,
            settings=WebSettings.from_config(self.config.http),
            metadata=self.metadata,
            records=self.records,
            metrics=self.metrics,
        )

    def upload_resource(self) -> UploadResource:
        """The upload resource alone, to mount in a deployment's own ``Site``."""
        return UploadResource(
            self.storage,
            self.metadata,
            self.reactor,
            receiver=self.upload_receiver(),
        )

    def upload_handler(self) -> UploadHandler:
        """The XEP-0363 slot handler: every rule, the quotas, the metrics."""
        c = self.config
        return UploadHandler(
            self.policy,
            self.signer,
            c.http.public_url,
            c.http.get_url,
            c.limits.slot_lifetime,
            metadata=self.metadata,
            free_space=self.storage.free_space,
            metrics=self.metrics,
            direct_urls=DirectUrls(self.direct) if self.direct is not None else None,
        )

    def handlers(self, *, watchdog: bool = False) -> list[XMPPHandler]:
        """The full handler set; ``watchdog``: ping the server over an
        XEP-0114 link and cut it when nothing answers (``link_timeout``)."""
        c = self.config.component
        found: list[XMPPHandler] = [
            generic.FallbackHandler(),
            disco.DiscoHandler(),
            ping.PingHandler(),
        ]
        if watchdog:
            found.append(
                LinkWatchdog(
                    self.reactor,
                    target=c.jid.partition(".")[2] or c.jid,
                    sender=c.jid,
                    link_timeout=c.link_timeout,
                )
            )
        found.append(self.upload_handler())
        found.append(
            AdHocHandler.build(
                self.metadata,
                self.storage,
                self.policy,
                self.config.http.get_url,
                self.reactor,
            )
        )
        return found


def open_node(
    config: Config, reactor: IServiceReactor, metrics: Metrics | None = None
) -> Node:
    """Open the stores a config names and build the node's parts.

    Start-up checks that can fail (storage, signing key, metadata schema) run
    here, before anything listens, and raise ``ConfigError`` naming the key.
    """
    return Node(config, reactor, open_backends(config, reactor), metrics)


def attach_handlers(
    parent: object, node: Node, *, watchdog: bool = False
) -> list[XMPPHandler]:
    """Put the node's full XMPP handler set on ``parent`` and return it.

    ``parent``: a wokkel handler collection (an ``InternalComponent``, a
    ``StreamManager``).  ``watchdog`` only on a link to a server (XEP-0114):
    an in-process component has no link to lose.
    """
    handlers = node.handlers(watchdog=watchdog)
    for handler in handlers:
        handler.setHandlerParent(parent)
    return handlers


def _direct_storage(config: Config, storage: Storage) -> DirectStorage | None:
    """The storage, when slots go straight to it (S3 direct mode)."""
    s3 = config.storage.s3
    if s3 is None or s3.mode != "direct":
        return None
    return cast(DirectStorage, storage)
