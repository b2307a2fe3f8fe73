"""The start-up probe of an object store: what it finds and what it refuses.

Against the real SeaweedFS of ``s3server``, and through ``WeakerStore``, a
proxy in front of it that makes it promise less: it drops ``x-amz-meta-*``
headers, ignores or refuses ``If-None-Match``, or turns a metadata REPLACE
copy into a COPY (re-signing what it changed, as a real store's own front
end would accept).  The probe blocks, so the proxy runs in a thread.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from s3server import REGION, SeaweedFS
from twisted.internet import reactor
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher

from httpupload._reactor import as_service_reactor
from httpupload.config_s3 import MiB, S3Settings
from httpupload.errors import ConfigError
from httpupload.storage.s3 import S3Storage
from httpupload.storage.s3.client import query_string, xml_children
from httpupload.storage.s3.probe import PROBE_NAME, StoreCapabilities

# Sent by http.client or added by signing: never forwarded as they came.
_HOP = {
    "host", "content-length", "connection", "authorization", "x-amz-date",
    "x-amz-content-sha256", "accept-encoding", "transfer-encoding",
}  # fmt: skip


class WeakerStore:
    """SeaweedFS behind a proxy that drops or changes what a weaker store would."""

    def __init__(
        self,
        upstream: SeaweedFS,
        *,
        drop_metadata: bool = False,
        ignore_conditions: bool = False,
        refuse_conditions: bool = False,
        copy_keeps_metadata: bool = False,
    ) -> None:
        self.upstream = upstream
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path))
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in _HOP
                }
                if refuse_conditions and "If-None-Match" in headers:
                    self._answer(501, {}, b"<Error><Code>NotImplemented</Code></Error>")
                    return
                if drop_metadata:
                    headers = {
                        n: v
                        for n, v in headers.items()
                        if not n.lower().startswith("x-amz-meta-")
                    }
                if ignore_conditions:
                    headers.pop("If-None-Match", None)
                if copy_keeps_metadata and "x-amz-metadata-directive" in {
                    n.lower() for n in headers
                }:
                    headers = {
                        n: ("COPY" if n.lower() == "x-amz-metadata-directive" else v)
                        for n, v in headers.items()
                    }
                aws = AWSRequest(
                    method=self.command,
                    url=upstream.endpoint + self.path,
                    headers=headers,
                    data=body,
                )
                creds = Credentials(upstream.access_key, upstream.secret_key)
                S3SigV4Auth(creds, "s3", REGION).add_auth(aws)
                connection = http.client.HTTPConnection(
                    "127.0.0.1", upstream.s3_port, timeout=10
                )
                try:
                    sent = body if body or self.command in ("PUT", "POST") else None
                    connection.request(
                        self.command, self.path, body=sent, headers=dict(aws.headers)
                    )
                    response = connection.getresponse()
                    data = response.read()
                    answer = {
                        n: v
                        for n, v in response.getheaders()
                        if n.lower() not in ("transfer-encoding", "connection")
                    }
                finally:
                    connection.close()
                self._answer(response.status, answer, data)

            def _answer(
                self, status: int, headers: dict[str, str], body: bytes
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                length = headers.get("Content-Length", str(len(body)))
                if self.command != "HEAD":
                    length = str(len(body))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.make_bucket()


@pytest.fixture
def weaker(seaweedfs: SeaweedFS) -> Iterator[Callable[..., WeakerStore]]:
    """A factory of proxies in front of the session's SeaweedFS, closed after."""
    made: list[WeakerStore] = []

    def make(**options: bool) -> WeakerStore:
        made.append(WeakerStore(seaweedfs, **options))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


_prefixes = iter(range(1, 10_000))


def storage_at(
    seaweedfs: SeaweedFS, bucket: str, endpoint: str | None = None, **options: Any
) -> S3Storage:
    settings = S3Settings(
        bucket=bucket,
        prefix=options.pop("prefix", f"probe{next(_prefixes)}/"),
        endpoint=endpoint or seaweedfs.endpoint,
        access_key_id=options.pop("access_key_id", seaweedfs.access_key),
        secret_access_key=options.pop("secret_access_key", seaweedfs.secret_key),
        **options,
    )
    return S3Storage(settings, reactor)


def keys_under_prefix(storage: S3Storage) -> list[str]:
    """Every object key under the storage's prefix (probe objects included)."""
    query = query_string({"list-type": 2, "prefix": storage.settings.prefix})
    status, _, body = storage.client.call_blocking("GET", "", query=query)
    assert status == 200
    return [c.findtext("Key") or "" for c in xml_children(body).iter("Contents")]


class Warnings:
    """Warnings logged through twisted.logger while in the block."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> list[str]:
        self._observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(self._observer)
        self.texts: list[str] = []
        return self.texts

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self._observer)
        self.texts.extend(
            formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.warn
        )


def refusal(storage: S3Storage, **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as refused:
        storage.check_at_start(**options)
    message = str(refused.value)
    assert "\n" not in message  # twistd prints it as one line
    return refused.value


@pytest.mark.enable_socket
def test_seaweedfs_has_every_capability(seaweedfs: SeaweedFS, bucket: str) -> None:
    """SeaweedFS keeps metadata, replaces it by copy and honours If-None-Match."""
    storage = storage_at(seaweedfs, bucket)
    with Warnings() as warnings:
        found = storage.check_at_start()
    assert found == StoreCapabilities(
        keeps_metadata=True, replaces_metadata=True, create_only="honoured"
    )
    assert warnings == []
    assert keys_under_prefix(storage) == []  # the probe object is gone


@pytest.mark.enable_socket
def test_store_dropping_metadata_refuses_start(
    seaweedfs: SeaweedFS, bucket: str, weaker: Callable[..., WeakerStore]
) -> None:
    """A store that drops x-amz-meta-* stops start-up with one line saying so."""
    proxy = weaker(drop_metadata=True)
    storage = storage_at(seaweedfs, bucket, proxy.endpoint)
    error = refusal(storage)
    assert error.key == "[storage.s3]"
    assert "drops user metadata (x-amz-meta-*" in error.problem
    assert [method for method, _ in proxy.seen][-1] == "DELETE"
    assert keys_under_prefix(storage) == []


@pytest.mark.enable_socket
def test_store_ignoring_if_none_match_warns(
    seaweedfs: SeaweedFS, bucket: str, weaker: Callable[..., WeakerStore]
) -> None:
    """A store that lets a create-only PUT replace an object starts, with a warning."""
    proxy = weaker(ignore_conditions=True)
    storage = storage_at(seaweedfs, bucket, proxy.endpoint)
    with Warnings() as warnings:
        found = storage.check_at_start()
    assert found.create_only == "ignored"
    assert found.keeps_metadata and found.replaces_metadata
    assert len(warnings) == 1
    assert "If-None-Match" in warnings[0]
    assert "could change" in warnings[0]
    assert keys_under_prefix(storage) == []


@pytest.mark.enable_socket
def test_store_refusing_if_none_match_refuses_start(
    seaweedfs: SeaweedFS, bucket: str, weaker: Callable[..., WeakerStore]
) -> None:
    """A store that answers every conditional PUT with an error stops start-up."""
    proxy = weaker(refuse_conditions=True)
    storage = storage_at(seaweedfs, bucket, proxy.endpoint)
    error = refusal(storage)
    assert "refuses conditional writes" in error.problem
    assert keys_under_prefix(storage) == []


@pytest.mark.enable_socket
def test_store_not_replacing_metadata_by_copy(
    seaweedfs: SeaweedFS, bucket: str, weaker: Callable[..., WeakerStore]
) -> None:
    """A copy keeping the old metadata stops start-up, unless no file is multipart."""
    proxy = weaker(copy_keeps_metadata=True)
    storage = storage_at(seaweedfs, bucket, proxy.endpoint, part_size=8 * MiB)
    error = refusal(storage)
    assert "copy onto itself" in error.problem
    assert "part_size" in error.problem
    # Every file below part_size goes up in one PutObject: no copy needed.
    assert storage.check_at_start(largest_file=8 * MiB - 1).replaces_metadata is False
    assert keys_under_prefix(storage) == []


@pytest.mark.enable_socket
def test_direct_mode_needs_no_metadata(
    seaweedfs: SeaweedFS, bucket: str, weaker: Callable[..., WeakerStore]
) -> None:
    """Direct mode writes no metadata of ours: such a store is fine there."""
    proxy = weaker(drop_metadata=True, refuse_conditions=True)
    storage = storage_at(
        seaweedfs,
        bucket,
        proxy.endpoint,
        mode="direct",
        public_base_url="https://cdn.example.org/",
    )
    found = storage.check_at_start()
    assert (found.keeps_metadata, found.create_only) == (False, "refused")


@pytest.mark.enable_socket
@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"bucket": "no-such-bucket-for-probe"}, "[storage.s3] bucket", "NoSuchBucket"),
        ({"secret_access_key": "wrong"}, "[storage.s3] secret_access_key", "Signature"),
        ({"access_key_id": "AKNOBODY"}, "[storage.s3] access_key_id", "InvalidAccess"),
    ],
)
def test_a_store_that_refuses_writes_stops_start(
    seaweedfs: SeaweedFS,
    bucket: str,
    options: dict[str, str],
    key: str,
    words: str,
) -> None:
    """No bucket or wrong keys: one line naming the setting, and the store's code."""
    storage = storage_at(seaweedfs, options.pop("bucket", bucket), **options)
    error = refusal(storage)
    assert error.key == key
    assert words in error.problem


@pytest.mark.enable_socket
def test_an_unreachable_store_stops_start(seaweedfs: SeaweedFS, bucket: str) -> None:
    """A store nobody answers at: one line naming the endpoint."""
    import socket

    # Bound but not listening, and held: connections are refused, and no
    # one else can take the port meanwhile.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refusing = s.getsockname()[1]
        storage = storage_at(seaweedfs, bucket, f"http://127.0.0.1:{refusing}")
        error = refusal(storage)
    assert error.key == "[storage.s3] endpoint"
    assert f"127.0.0.1:{refusing}" in error.problem


@pytest.mark.enable_socket
def test_probe_object_is_never_a_file(seaweedfs: SeaweedFS, bucket: str) -> None:
    """The probe's key is not a file id: listings would never take it for a file."""
    from httpupload.slots import FILE_ID_RE

    assert not FILE_ID_RE.fullmatch(PROBE_NAME + "0" * 16)


@pytest.mark.enable_socket
def test_the_service_does_not_start_on_a_store_that_drops_metadata(
    seaweedfs: SeaweedFS, bucket: str, weaker: Callable[..., WeakerStore], tmp_path: Any
) -> None:
    """Building the service (as twistd does) on such a store stops with one line
    naming [storage.s3], before any listener or database is opened."""
    from pathlib import Path

    from httpupload.config import parse_config
    from httpupload.service import make_service

    proxy = weaker(drop_metadata=True)
    config = parse_config(
        {
            "component": {"jid": "upload.localhost", "secret": "s"},
            "http": {
                "public_url": "https://upload.localhost/",
                "signing_key": "k" * 32,
            },
            "storage": {
                "backend": "s3",
                "s3": {
                    "bucket": bucket,
                    "prefix": f"probe{next(_prefixes)}/",
                    "endpoint": proxy.endpoint,
                    "region": REGION,
                    "access_key_id": seaweedfs.access_key,
                    "secret_access_key": seaweedfs.secret_key,
                },
            },
            # Never reached: the store is judged first.
            "metadata": {"backend": "postgresql", "dsn": "postgresql://127.0.0.1:1/x"},
        },
        Path(tmp_path),
    )
    with pytest.raises(ConfigError) as refused:
        make_service(config, as_service_reactor(reactor))
    assert refused.value.key == "[storage.s3]"
    assert "drops user metadata" in str(refused.value)
    assert "\n" not in str(refused.value)
