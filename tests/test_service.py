"""The service tree twistd runs, started and stopped in-process."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from httpupload import make_service, parse_config
from httpupload.errors import ConfigError
from httpupload.keys import KEY_FILE_NAME


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp_path: Path, **http: object):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "component": {
                "jid": "upload.localhost",
                "secret": "s",
                "server_port": closed_port(),
            },
            "http": {
                "listen": "tcp:0:interface=127.0.0.1",
                "public_url": "https://upload.localhost/",
                **http,
            },
            "storage": {"path": str(tmp_path / "store")},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        },
        tmp_path,
    )


def test_children_in_start_order(tmp_path: Path) -> None:
    """storage, expiry, http, uploads (the drain), xmpp, metrics, in start order."""
    service = make_service(config(tmp_path), reactor)
    names = [s.name for s in service]
    assert names == ["storage", "expiry", "http", "uploads", "xmpp", "metrics"]
    key = (tmp_path / "store" / KEY_FILE_NAME).read_bytes()
    assert len(key.strip()) >= 32
    assert (tmp_path / "store" / KEY_FILE_NAME).stat().st_mode & 0o077 == 0
    # The key is kept: a second start signs with the same one.
    make_service(config(tmp_path), reactor)
    assert (tmp_path / "store" / KEY_FILE_NAME).read_bytes() == key


def test_the_sweep_holds_this_nodes_uploads_in_flight(tmp_path: Path) -> None:
    """With the http role, the expiry child asks the upload receiver which
    slots are still arriving; without it, it knows of none (the long grace)."""
    service = make_service(config(tmp_path), reactor)
    expiry = service.getServiceNamed("expiry")
    receiver = service.getServiceNamed("http").factory.uploads
    assert expiry.in_flight is not None
    assert expiry.in_flight == receiver.slot_ids


@pytest.mark.parametrize(
    ("roles", "names"),
    [
        (["http"], ["storage", "expiry", "http", "uploads", "metrics"]),
        (["component"], ["storage", "expiry", "xmpp", "metrics"]),
    ],
)
def test_roles_decide_the_children(
    tmp_path: Path, roles: list[str], names: list[str], postgresql: Any
) -> None:
    """An HTTP node runs no component; a component node listens for no HTTP."""
    raw = {
        "component": {
            "jid": "upload.localhost",
            "server_port": closed_port(),
            **({"secret": "s"} if "component" in roles else {}),
        },
        "http": {
            "public_url": "https://upload.localhost/",
            "signing_key": "k" * 32,
            **({"listen": "tcp:0:interface=127.0.0.1"} if "http" in roles else {}),
        },
        "storage": {"path": str(tmp_path / "store")},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "node": {"roles": roles},
        "metadata": {"backend": "postgresql", "dsn": postgresql.new_database()},
    }
    service = make_service(parse_config(raw, tmp_path), reactor)
    assert [s.name for s in service] == names


@pytest_twisted.ensureDeferred
async def test_health_of_an_http_node(tmp_path: Path, postgresql: Any) -> None:
    """An HTTP-only node is healthy without an XMPP link and says whose it is."""
    raw = {
        "component": {"jid": "upload.localhost"},
        "http": {
            "public_url": "https://upload.localhost/",
            "signing_key": "k" * 32,
            "listen": "tcp:0:interface=127.0.0.1",
        },
        "storage": {"path": str(tmp_path / "store")},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "node": {"roles": ["http"], "name": "web-1"},
        "metadata": {"backend": "postgresql", "dsn": postgresql.new_database()},
    }
    service = make_service(parse_config(raw, tmp_path), reactor)
    service.privilegedStartService()
    service.startService()
    try:
        port = await service.getServiceNamed("metrics")._waitingForPort
        response = await treq.get(f"http://127.0.0.1:{port.getHost().port}/health")
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
        make_service(config(tmp_path, listen="tcp:notaport"), reactor)
    assert info.value.key == "[http] listen"


@pytest_twisted.ensureDeferred
async def test_start_and_stop(tmp_path: Path) -> None:
    """Crash leftovers are gone before anything listens; start and stop are clean."""
    leftover = tmp_path / "store" / "tmp" / "deadbeef"
    leftover.mkdir(parents=True)
    (leftover / "data").write_bytes(b"half")
    service = make_service(config(tmp_path, shutdown_grace=1), reactor)
    assert not leftover.exists()
    service.privilegedStartService()
    service.startService()
    port = await service.getServiceNamed("metrics")._waitingForPort
    base = f"http://127.0.0.1:{port.getHost().port}"
    response = await treq.get(f"{base}/metrics")
    text = (await response.text()).splitlines()
    assert "httpupload_xmpp_connected 0.0" in text
    assert "httpupload_uploads_in_flight 0.0" in text
    response = await treq.get(f"{base}/health")
    assert response.code == 503  # the XMPP server of this test does not exist
    assert (await response.json())["xmpp"] == "offline"
    await service.stopService()


def test_the_storage_child_sweeps_stale_multipart_uploads() -> None:
    """Started with the service, hourly, for uploads older than a dead slot."""
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from httpupload.backends import Backends
    from httpupload.service import STALE_UPLOAD_SWEEP, BackendsService

    calls: list[str | float] = []

    class Store:
        def start(self):  # type: ignore[no-untyped-def]
            calls.append("start")
            return succeed(None)

        def close(self):  # type: ignore[no-untyped-def]
            calls.append("close")
            return succeed(None)

        def abort_stale_uploads(self, *args: object):  # type: ignore[no-untyped-def]
            # No age given: the store's own stale_multipart_after decides.
            calls.append("sweep" if not args else "sweep with an age")
            return succeed(2)

    clock = Clock()
    service = BackendsService(Backends(Store(), None), clock)  # type: ignore[arg-type]
    service.startService()
    assert calls == ["start"]
    clock.advance(STALE_UPLOAD_SWEEP)
    clock.advance(STALE_UPLOAD_SWEEP)
    assert calls == ["start", "sweep", "sweep"]
    service.stopService()
    assert calls[-1] == "close"
    clock.advance(STALE_UPLOAD_SWEEP)
    assert calls.count("sweep") == 2
