"""The service tree twistd runs, built, started and stopped in-process."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.application.service import MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from httpupload import make_service, parse_config
from httpupload._reactor import IServiceReactor, as_service_reactor
from httpupload.backends import STALE_UPLOAD_SWEEP, Backends, BackendsService
from httpupload.config import Config
from httpupload.errors import ConfigError
from httpupload.keys import KEY_FILE_NAME

REACTOR = as_service_reactor(reactor)


def config(tmp_path: Path, server_port: int = 5347, **http: object) -> Config:
    """Both roles on one folder; listeners on UNIX sockets in ``tmp_path``."""
    return parse_config(
        {
            "component": {
                "jid": "upload.localhost",
                "secret": "s",
                "server_port": server_port,
            },
            "http": {
                "listen": f"unix:{tmp_path / 'http.sock'}",
                "public_url": "https://upload.localhost/",
                **http,
            },
            "storage": {"path": str(tmp_path / "store")},
            "metrics": {"listen": f"unix:{tmp_path / 'metrics.sock'}"},
        },
        tmp_path,
    )


@implementer(IAgentEndpointFactory)
class UnixSocket:
    """Every URL's connection goes to one UNIX socket."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def endpointForURI(self, uri: object) -> IStreamClientEndpoint:
        return UNIXClientEndpoint(reactor, str(self.path))


def client_of(path: Path) -> HTTPClient:
    """A treq client whose requests all reach the listener at ``path``."""
    return HTTPClient(Agent.usingEndpointFactory(reactor, UnixSocket(path)))


@pytest.fixture
def no_xmpp_server() -> Iterator[int]:
    """A loopback port, held bound by this test and never listening: a
    connection to it is refused, as to an XMPP server that is not running."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def descendants(service: MultiService) -> Iterator[str]:
    """The names below ``service``, depth first."""
    for child in service:
        yield child.name
        if isinstance(child, MultiService):
            yield from descendants(child)


def test_children_in_start_order(tmp_path: Path) -> None:
    """The store owner first, then what it holds (the sweep, then what serves),
    then the metrics; the generated signing key is kept for the next start."""
    service = make_service(config(tmp_path), REACTOR)
    assert service.names() == [
        "backends",
        "expiry",
        "serving",
        "uploads",
        "http",
        "xmpp",
        "metrics",
    ]
    key = (tmp_path / "store" / KEY_FILE_NAME).read_bytes()
    assert len(key.strip()) >= 32
    assert (tmp_path / "store" / KEY_FILE_NAME).stat().st_mode & 0o077 == 0
    # The key is kept: a second start signs with the same one.
    make_service(config(tmp_path), REACTOR)
    assert (tmp_path / "store" / KEY_FILE_NAME).read_bytes() == key


def test_every_store_user_is_under_the_store_owner(tmp_path: Path) -> None:
    """expiry, http, uploads and xmpp are descendants of ``backends``, found by
    name from the root; metrics, which uses no store, is not."""
    service = make_service(config(tmp_path), REACTOR)
    backends = service.getServiceNamed("backends")
    assert isinstance(backends, BackendsService)
    assert set(descendants(backends)) == {
        "expiry",
        "serving",
        "uploads",
        "http",
        "xmpp",
    }
    assert service.getServiceNamed("metrics").parent is service
    with pytest.raises(KeyError):
        service.getServiceNamed("storage")


def test_the_sweep_holds_this_nodes_uploads_in_flight(tmp_path: Path) -> None:
    """With the http role, the expiry child asks the upload receiver which
    slots are still arriving."""
    service = make_service(config(tmp_path), REACTOR)
    expiry: Any = service.getServiceNamed("expiry")
    receiver = service.getServiceNamed("http").factory.uploads  # type: ignore[attr-defined]
    assert expiry.in_flight is not None
    assert expiry.in_flight == receiver.slot_ids


@pytest.mark.parametrize(
    ("roles", "names"),
    [
        (
            ["http"],
            ["backends", "expiry", "serving", "uploads", "http", "metrics"],
        ),
        (["component"], ["backends", "expiry", "serving", "xmpp", "metrics"]),
    ],
)
def test_roles_decide_the_children(
    tmp_path: Path, roles: list[str], names: list[str], postgresql: Any
) -> None:
    """An HTTP node runs no component; a component node listens for no HTTP."""
    raw = {
        "component": {
            "jid": "upload.localhost",
            **({"secret": "s"} if "component" in roles else {}),
        },
        "http": {
            "public_url": "https://upload.localhost/",
            "signing_key": "k" * 32,
            **({"listen": f"unix:{tmp_path / 'http.sock'}"} if "http" in roles else {}),
        },
        "storage": {"path": str(tmp_path / "store")},
        "metrics": {"listen": f"unix:{tmp_path / 'metrics.sock'}"},
        "node": {"roles": roles},
        "metadata": {"backend": "postgresql", "dsn": postgresql.new_database()},
    }
    service = make_service(parse_config(raw, tmp_path), REACTOR)
    assert service.names() == names


@pytest_twisted.ensureDeferred
async def test_health_of_an_http_node(tmp_path: Path, postgresql: Any) -> None:
    """An HTTP-only node is healthy without an XMPP link and says whose it is."""
    raw = {
        "component": {"jid": "upload.localhost"},
        "http": {
            "public_url": "https://upload.localhost/",
            "signing_key": "k" * 32,
            "listen": f"unix:{tmp_path / 'http.sock'}",
        },
        "storage": {"path": str(tmp_path / "store")},
        "metrics": {"listen": f"unix:{tmp_path / 'metrics.sock'}"},
        "node": {"roles": ["http"], "name": "web-1"},
        "metadata": {"backend": "postgresql", "dsn": postgresql.new_database()},
    }
    service = make_service(parse_config(raw, tmp_path), REACTOR)
    service.privilegedStartService()
    service.startService()
    try:
        response = await client_of(tmp_path / "metrics.sock").get(
            "http://metrics/health"
        )
        assert await response.json() == {
            "status": "ok",
            "node": "web-1",
            "uploads_in_flight": 0,
        }
    finally:
        await service.stopService()


def test_bad_listen_names_the_key(tmp_path: Path) -> None:
    """An endpoint description that does not parse is a config error."""
    with pytest.raises(ConfigError) as info:
        make_service(config(tmp_path, listen="tcp:notaport"), REACTOR)
    assert info.value.key == "[http] listen"


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_start_and_stop(tmp_path: Path, no_xmpp_server: int) -> None:
    """Crash leftovers are gone before anything listens; start and stop are
    clean, and an XMPP server that refuses the link makes the node degraded."""
    leftover = tmp_path / "store" / "tmp" / "deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "data").write_bytes(b"half")
    service = make_service(
        config(tmp_path, server_port=no_xmpp_server, shutdown_grace=1), REACTOR
    )
    assert not leftover.exists()
    service.privilegedStartService()
    service.startService()
    metrics = client_of(tmp_path / "metrics.sock")
    response = await metrics.get("http://metrics/metrics")
    text = (await response.text()).splitlines()
    assert "httpupload_xmpp_connected 0.0" in text
    assert "httpupload_uploads_in_flight 0.0" in text
    response = await metrics.get("http://metrics/health")
    assert response.code == 503
    assert (await response.json())["xmpp"] == "offline"
    response = await client_of(tmp_path / "http.sock").get("http://upload/")
    assert response.code == 404
    await treq.collect(response, lambda _: None)
    await service.stopService()


class Events:
    """What the stores and the children of a BackendsService did, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.closing: dict[str, Deferred[None]] = {}


class Store:
    """A storage or metadata store that records its start and close."""

    def __init__(self, name: str, events: Events) -> None:
        self.name = name
        self.events = events

    def start(self) -> Deferred[None]:
        self.events.log.append(f"start {self.name}")
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.events.log.append(f"close {self.name}")
        return succeed(None)

    def abort_stale_uploads(self) -> Deferred[int]:
        # No age given: the store's own stale_multipart_after decides.
        self.events.log.append("sweep")
        return succeed(2)


class Child(Service):
    """A store user whose stop ends only when the test says so."""

    def __init__(self, name: str, events: Events) -> None:
        self.setName(name)
        self.label = name
        self.events = events

    def startService(self) -> None:
        super().startService()
        self.events.log.append(f"start {self.label}")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.events.log.append(f"stop {self.label}")
        d: Deferred[None] = Deferred()
        self.events.closing[self.label] = d
        return d


def backends_service(events: Events, clock: Clock) -> BackendsService:
    storage, metadata = Store("storage", events), Store("metadata", events)
    backends = Backends(
        storage,  # type: ignore[arg-type]
        metadata,  # type: ignore[arg-type]
        sweep_stale=storage.abort_stale_uploads,
    )
    return BackendsService(backends, clock)


def test_stores_open_before_and_close_after_their_users() -> None:
    """Storage then metadata start before any child; children stop newest
    first, each after the later ones ended (those in one MultiService at once);
    the metadata store, then the storage, close after the last."""
    events, clock = Events(), Clock()
    owner = backends_service(events, clock)
    Child("expiry", events).setServiceParent(owner)
    serving = MultiService()
    serving.setServiceParent(owner)
    Child("http", events).setServiceParent(serving)
    Child("xmpp", events).setServiceParent(serving)
    owner.startService()
    assert events.log == [
        "start storage",
        "start metadata",
        "start expiry",
        "start http",
        "start xmpp",
    ]
    del events.log[:]
    stopped = owner.stopService()
    assert sorted(events.log) == ["stop http", "stop xmpp"]
    events.closing["http"].callback(None)
    assert "stop expiry" not in events.log
    events.closing["xmpp"].callback(None)
    assert events.log[-1] == "stop expiry"
    assert not stopped.called
    events.closing["expiry"].callback(None)
    assert events.log[-2:] == ["close metadata", "close storage"]
    assert stopped.called


def test_the_store_owner_sweeps_stale_multipart_uploads() -> None:
    """Started with the service, hourly, until it stops."""
    events, clock = Events(), Clock()
    owner = backends_service(events, clock)
    owner.startService()
    assert "sweep" not in events.log
    clock.advance(STALE_UPLOAD_SWEEP)
    clock.advance(STALE_UPLOAD_SWEEP)
    assert events.log.count("sweep") == 2
    owner.stopService()
    assert events.log[-1] == "close storage"
    clock.advance(STALE_UPLOAD_SWEEP)
    assert events.log.count("sweep") == 2


def test_the_global_reactor_is_a_service_reactor() -> None:
    """The running reactor provides every interface the service asks for,
    and a reactor lacking one is refused by name."""
    assert IServiceReactor.providedBy(REACTOR) or REACTOR is reactor
    with pytest.raises(TypeError, match="IReactorThreads"):
        as_service_reactor(Clock())


def test_attach_handlers_gives_an_embedder_the_full_set(tmp_path: Path) -> None:
    """attach_handlers puts disco, ping, the slot handler (with the node's
    quotas and metrics), the ad-hoc commands and the fallback on any wokkel
    parent, and the link watchdog only when asked (an XEP-0114 link)."""
    from wokkel import component, disco, generic, ping

    from httpupload.assembly import attach_handlers, open_node
    from httpupload.xmpp.adhoc import AdHocHandler
    from httpupload.xmpp.handler import UploadHandler
    from httpupload.xmpp.keepalive import LinkWatchdog

    node = open_node(config(tmp_path), REACTOR)
    upload = component.InternalComponent(component.Router(), "upload.localhost")
    handlers = attach_handlers(upload, node)
    kinds = {type(h) for h in handlers}
    assert kinds == {
        generic.FallbackHandler,
        disco.DiscoHandler,
        ping.PingHandler,
        UploadHandler,
        AdHocHandler,
    }
    assert all(h.parent is upload for h in handlers)
    (slots,) = [h for h in handlers if isinstance(h, UploadHandler)]
    assert slots.metrics is node.metrics
    assert slots.granter.metadata is node.metadata
    assert slots.policy.quotas == node.config.quotas
    linked = node.handlers(watchdog=True)
    assert any(isinstance(h, LinkWatchdog) for h in linked)


def test_a_store_that_cannot_start_holds_nothing_back() -> None:
    """Both stores are started at once and the children right after, without
    waiting for a slow store's start; its failure is logged, not raised."""
    from twisted.logger import capturedLogs

    events, clock = Events(), Clock()
    owner = backends_service(events, clock)
    slow: Deferred[None] = Deferred()
    owner.backends.storage.start = lambda: slow  # type: ignore[method-assign]
    Child("expiry", events).setServiceParent(owner)
    owner.startService()
    assert events.log == ["start metadata", "start expiry"]
    with capturedLogs() as logged:
        slow.errback(RuntimeError("no credentials"))
    assert [e["log_format"] for e in logged] == ["Starting the {name} failed"]
    assert logged[0]["name"] == "storage"
