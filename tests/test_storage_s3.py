"""The S3 backend against a real SeaweedFS: writes, reads, ranges, sweeps, presigns."""

from __future__ import annotations

import itertools
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from hypothesis import given
from hypothesis import strategies as st
from s3server import SeaweedFS, seaweedfs  # noqa: F401
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from httpupload.config_s3 import MiB, S3Settings
from httpupload.errors import DuplicateFile, StorageError, StoreDown
from httpupload.slots import new_file_id
from httpupload.storage import FileInfo
from httpupload.storage.s3 import S3Storage
from httpupload.storage.s3.client import object_url, query_string, xml_children
from httpupload.storage.s3.meta import info_from_headers, info_headers
from httpupload.storage.s3.read import BodyRelay
from httpupload.web.responses import http_status

_prefixes = itertools.count(1)


def info_for(file_id: str, data: bytes, filename: str = "naïve café.txt") -> FileInfo:
    import hashlib

    return FileInfo(
        file_id=file_id,
        filename=filename,
        size=len(data),
        content_type="text/plain; charset=utf-8",
        sha256=hashlib.sha256(data).hexdigest(),
        created=1700000000.25,
    )


async def store(
    storage: S3Storage, file_id: str, data: bytes, chunk: int = 256 * 1024
) -> FileInfo:
    """Write ``data`` as the web layer does: honouring write()'s Deferreds."""
    pending = storage.begin_write(file_id)
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        waiting = pending.write(bytes(view[start : start + chunk]))
        if waiting is not None:
            await waiting
    info = info_for(file_id, data)
    await pending.commit(info)
    return info


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedFS) -> str:  # noqa: F811
    return seaweedfs.make_bucket()


@pytest.fixture
def make_storage(
    seaweedfs: SeaweedFS,  # noqa: F811
    bucket: str,
) -> Any:
    """A factory of started S3Storage objects, each under a prefix of its own."""
    made: list[S3Storage] = []

    async def make(**options: Any) -> S3Storage:
        page_size = options.pop("page_size", 1000)
        agent = options.pop("agent", None)
        settings = S3Settings(
            bucket=options.pop("bucket", bucket),
            prefix=options.pop("prefix", f"t{next(_prefixes)}/"),
            endpoint=options.pop("endpoint", seaweedfs.endpoint),
            access_key_id=seaweedfs.access_key,
            secret_access_key=seaweedfs.secret_key,
            part_size=options.pop("part_size", 5 * MiB),
            **options,
        )
        storage = S3Storage(settings, reactor, page_size=page_size, agent=agent)
        await storage.start()
        made.append(storage)
        return storage

    yield make
    for storage in made:
        pytest_twisted.blockon(storage.close())


@pytest_twisted.async_yield_fixture
async def storage(make_storage: Callable[..., Any]) -> AsyncIterator[S3Storage]:
    yield await make_storage()


class Downloads(Resource):
    """GET /?id=…&offset=…&length=… sends that range through StoredFile.send."""

    isLeaf = True

    def __init__(self, storage: S3Storage) -> None:
        super().__init__()
        self.storage = storage

    def render_GET(self, request: Any) -> Any:
        file_id = request.args[b"id"][0].decode()
        offset = int(request.args.get(b"offset", [b"0"])[0])

        def opened(stored: Any) -> None:
            if stored is None:
                request.setResponseCode(404)
                request.finish()
                return
            length = int(request.args.get(b"length", [str(stored.info.size)])[0])
            request.setHeader(b"Content-Length", str(length).encode())
            if request.args.get(b"delete"):
                # The object goes away between the HEAD and the GET.
                self.storage.delete(file_id).addCallback(
                    lambda _: stored.send(request, offset, length)
                )
                return
            stored.send(request, offset, length)

        self.storage.open_read(file_id).addCallback(opened)
        return NOT_DONE_YET


@pytest_twisted.async_yield_fixture
async def site(storage: S3Storage) -> AsyncIterator[tuple[str, Any]]:
    """A real Site serving ``storage`` on a loopback port, and a treq client."""
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(Site(Downloads(storage)))
    host = port.getHost()
    assert isinstance(host, IPv4Address)
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    yield f"http://127.0.0.1:{host.port}/", client
    await pool.closeCachedConnections()
    await maybeDeferred(port.stopListening)


async def multipart_uploads(storage: S3Storage) -> list[str]:
    query = query_string({"uploads": None, "prefix": storage.settings.prefix})
    _, body = await storage.client.call("GET", "", query=query)
    return [u.findtext("Key") or "" for u in xml_children(body).iter("Upload")]


class FakeRequest:
    """What BodyRelay uses of a request, recorded."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: object = None
        self.finished = 0
        self.cut = False
        self.done: Deferred[None] = Deferred()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        return self.done

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished += 1

    def loseConnection(self) -> None:
        self.cut = True


# -- pure parts ---------------------------------------------------------------


def test_path_style_url() -> None:
    """Path-style puts the bucket in the path and percent-encodes the key."""
    settings = S3Settings(bucket="bkt", endpoint="http://127.0.0.1:9000/")
    assert object_url(settings, "up/a b") == "http://127.0.0.1:9000/bkt/up/a%20b"
    assert object_url(settings, "", "list-type=2") == (
        "http://127.0.0.1:9000/bkt/?list-type=2"
    )


def test_virtual_host_url() -> None:
    """Virtual-host addressing puts the bucket in the host name."""
    settings = S3Settings(
        bucket="bkt", endpoint="https://s3.example.org", addressing="virtual"
    )
    assert object_url(settings, "p/id") == "https://bkt.s3.example.org/p/id"


def test_aws_endpoint_from_region() -> None:
    """Without an endpoint, the URL is AWS's regional one."""
    settings = S3Settings(bucket="bkt", region="eu-west-3", addressing="virtual")
    assert object_url(settings, "k") == "https://bkt.s3.eu-west-3.amazonaws.com/k"


@given(
    filename=st.text(min_size=1, max_size=100),
    content_type=st.from_regex(r"[a-z]{1,10}/[a-z0-9.+-]{1,20}", fullmatch=True),
    created=st.floats(min_value=0, max_value=4e9),
)
def test_info_survives_metadata(
    filename: str, content_type: str, created: float
) -> None:
    """Any file name and type come back from the object's ASCII headers unchanged."""
    info = FileInfo(
        file_id="A" * 22,
        filename=filename,
        size=12,
        content_type=content_type,
        sha256="ab" * 32,
        created=created,
    )
    headers = Headers()
    for name, value in info_headers(info).items():
        encoded = value.encode("ascii")  # raises if a value is not ASCII
        headers.addRawHeader(name.lower().encode(), encoded)
    headers.addRawHeader(b"content-length", b"12")
    assert info_from_headers(info.file_id, headers) == info


def test_relay_cuts_connection_when_s3_fails() -> None:
    """A body that breaks off midway cuts the client's connection, never finishes."""
    request = FakeRequest()
    relay = BodyRelay(request, 10)  # type: ignore[arg-type]
    relay.start()
    relay.dataReceived(b"12345")
    relay.connectionLost(Failure(ConnectionError("reset")))
    assert request.cut
    assert request.finished == 0
    assert request.producer is None
    assert request.written == [b"12345"]


def test_relay_finishes_whole_body_and_follows_client_pace() -> None:
    """The relay pauses the S3 side with the client, and finishes on a whole body."""

    class Source:
        state = "running"

        def pauseProducing(self) -> None:
            self.state = "paused"

        def resumeProducing(self) -> None:
            self.state = "running"

        def stopProducing(self) -> None:
            self.state = "stopped"

    request = FakeRequest()
    relay = BodyRelay(request, 4)  # type: ignore[arg-type]
    relay.start()
    relay.pauseProducing()
    source = Source()
    relay.makeConnection(source)
    assert source.state == "paused"
    relay.resumeProducing()
    relay.dataReceived(b"abcd")
    relay.connectionLost(Failure(ResponseDone()))
    assert (request.finished, request.cut) == (1, False)
    assert b"".join(request.written) == b"abcd"
    # The client goes away: the S3 connection is dropped.
    gone = FakeRequest()
    relay2 = BodyRelay(gone, 4)  # type: ignore[arg-type]
    relay2.start()
    source2 = Source()
    relay2.makeConnection(source2)
    gone.done.errback(ConnectionError("client left"))
    assert source2.state == "stopped"
    relay2.connectionLost(Failure(ConnectionError("dropped")))
    assert (gone.finished, gone.cut) == (0, False)


# -- against SeaweedFS ----------------------------------------------------------


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_multipart_round_trip_and_range(
    storage: S3Storage, site: tuple[str, Any]
) -> None:
    """A 23 MiB file goes up in 5 MiB parts, keeps its info, and serves ranges."""
    url, client = site
    file_id = new_file_id()
    data = os.urandom(23 * MiB)
    info = await store(storage, file_id, data)
    assert await storage.stat(file_id) == info
    assert await multipart_uploads(storage) == []
    response = await client.get(url, params={"id": file_id})
    assert await response.content() == data
    offset, length = 5 * MiB - 3, 1000
    response = await client.get(
        url, params={"id": file_id, "offset": offset, "length": length}
    )
    assert response.code == 200
    assert await response.content() == data[offset : offset + length]


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_abort_leaves_nothing(storage: S3Storage) -> None:
    """An aborted upload after two parts leaves no object and no multipart upload."""
    file_id = new_file_id()
    pending = storage.begin_write(file_id)
    for _ in range(12):
        waiting = pending.write(b"z" * MiB)
        if waiting is not None:
            await waiting
    await pending.abort()
    await pending.abort()
    assert await storage.stat(file_id) is None
    assert await multipart_uploads(storage) == []


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_second_commit_is_already_stored(storage: S3Storage) -> None:
    """Committing an id that exists fails with DuplicateFile, small or multipart."""
    file_id = new_file_id()
    first = await store(storage, file_id, b"first")
    with pytest.raises(DuplicateFile):
        await store(storage, file_id, b"second")
    with pytest.raises(DuplicateFile):
        await store(storage, file_id, b"y" * (6 * MiB))
    assert await storage.stat(file_id) == first
    assert await multipart_uploads(storage) == []


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_write_waits_for_parts_and_memory_stays_bounded(
    make_storage: Callable[..., Any],
) -> None:
    """With parts in flight, write() asks the body to wait; memory stays bounded."""
    storage = await make_storage(parts_in_flight=1)
    file_id = new_file_id()
    pending = storage.begin_write(file_id)
    chunk = b"m" * (256 * 1024)
    waited = 0
    tracemalloc.start()
    try:
        for _ in range(64 * 4):  # 64 MiB
            waiting = pending.write(chunk)
            if waiting is not None:
                assert not waiting.called
                waited += 1
                await waiting
        await pending.commit(info_for(file_id, b""))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert waited >= 10
    assert peak < 6 * 5 * MiB
    stat = await storage.stat(file_id)
    assert stat is not None and stat.size == 64 * MiB


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_abort_stale_uploads(make_storage: Callable[..., Any]) -> None:
    """The sweep aborts multipart uploads started before the cutoff, page by page."""
    storage = await make_storage(page_size=1)
    for _ in range(3):
        await storage.client.call(
            "POST",
            storage.settings.prefix + new_file_id(),
            query=query_string({"uploads": None}),
        )
    assert await storage.abort_stale_uploads(3600) == 0
    assert len(await multipart_uploads(storage)) == 3
    # A cutoff a minute ahead makes every upload stale.
    assert await storage.abort_stale_uploads(-60) == 3
    assert await multipart_uploads(storage) == []


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_stale_sweep_age_is_the_setting(
    make_storage: Callable[..., Any],
) -> None:
    """Without an age, the sweep aborts uploads older than stale_multipart_after."""
    kept = await make_storage()
    assert kept.settings.stale_multipart_after == 86400
    await kept.client.call(
        "POST",
        kept.settings.prefix + new_file_id(),
        query=query_string({"uploads": None}),
    )
    assert await kept.abort_stale_uploads() == 0
    # An age a minute below zero makes every upload stale.
    swept = await make_storage(prefix=kept.settings.prefix, stale_multipart_after=-60)
    assert await swept.abort_stale_uploads() == 1
    assert await multipart_uploads(kept) == []


def test_stale_multipart_after_is_read_from_the_config(tmp_path: Any) -> None:
    """[storage.s3] stale_multipart_after is seconds, 86400 unless given."""
    from httpupload.config_s3 import parse_s3

    assert parse_s3({"bucket": "b"}, tmp_path).stale_multipart_after == 86400
    given = parse_s3({"bucket": "b", "stale_multipart_after": 7200}, tmp_path)
    assert given.stale_multipart_after == 7200


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "positive integer"),
        (-5, "positive integer"),
        ("1h", "positive integer"),
        (True, "positive integer"),
        (86400.5, "positive integer"),
        (3599, "at least 3600"),
        (31 * 86400, "at most 2592000"),
    ],
)
def test_bad_stale_multipart_after_names_the_key(
    tmp_path: Any, value: object, problem: str
) -> None:
    """A bad age is refused in one line naming [storage.s3] stale_multipart_after."""
    from httpupload.config_s3 import parse_s3
    from httpupload.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        parse_s3({"bucket": "b", "stale_multipart_after": value}, tmp_path)
    assert refused.value.key == "[storage.s3] stale_multipart_after"
    assert problem in refused.value.problem
    assert "\n" not in str(refused.value)


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_list_ids_pages(make_storage: Callable[..., Any]) -> None:
    """list_ids follows continuation tokens and keeps only ids under the prefix."""
    storage = await make_storage(page_size=2)
    ids = {new_file_id() for _ in range(5)}
    for file_id in ids:
        await store(storage, file_id, b"1")
    prefix = storage.settings.prefix
    await storage.client.call("PUT", prefix + "not an id", body=b"x")
    await storage.client.call("PUT", prefix + "sub/" + new_file_id(), body=b"x")
    await storage.client.call("PUT", "elsewhere/" + new_file_id(), body=b"x")
    assert await storage.list_ids() == ids


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_presigned_put(storage: S3Storage) -> None:
    """A presigned PUT takes the right length and type, and refuses anything else.

    The type is the slot's, else application/octet-stream: never the uploader's.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def put(url: str, body: bytes, content_type: str | None) -> int:
        headers: dict[bytes | str, bytes | str] = (
            {"Content-Type": content_type} if content_type else {}
        )
        response = await client.put(url, data=body, headers=headers)
        await response.content()
        return int(response.code)

    file_id = new_file_id()
    url, headers = storage.presign_put(file_id, 5, "image/png", 60)
    assert headers == {"Content-Length": "5", "Content-Type": "image/png"}
    assert await put(url, b"12345", "image/jpeg") == 403
    assert await put(url, b"123456", "image/png") == 403
    assert await storage.stat(file_id) is None
    assert await put(url, b"12345", "image/png") == 200
    stat = await storage.stat(file_id)
    assert stat is not None and (stat.size, stat.content_type) == (5, "image/png")
    assert stat.sha256 == ""

    # No type from the slot: the uploader may not choose one (text/html).
    untyped_id = new_file_id()
    untyped, headers = storage.presign_put(untyped_id, 3, None, 60)
    assert headers == {
        "Content-Length": "3",
        "Content-Type": "application/octet-stream",
    }
    assert await put(untyped, b"123", "text/html") == 403
    assert await put(untyped, b"123", None) == 403
    assert await put(untyped, b"1234", "application/octet-stream") == 403
    assert await put(untyped, b"123", "application/octet-stream") == 200
    stat = await storage.stat(untyped_id)
    assert stat is not None and stat.content_type == "application/octet-stream"

    expiring, _ = storage.presign_put(new_file_id(), 3, None, 1)
    await deferLater(reactor, 2.1, lambda: None)
    assert await put(expiring, b"123", "application/octet-stream") == 403
    await pool.closeCachedConnections()


def test_public_url() -> None:
    """A direct GET URL is the public base, the object key and the name."""
    settings = S3Settings(
        bucket="bkt", prefix="up/", public_base_url="https://cdn.example.org/"
    )
    storage = S3Storage(settings, reactor)
    file_id = "A" * 22
    assert storage.public_url(file_id, "a b.png") == (
        f"https://cdn.example.org/up/{file_id}?filename=a%20b.png"
    )


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_send_cuts_connection_when_object_vanishes(
    storage: S3Storage, site: tuple[str, Any]
) -> None:
    """If the GET behind send fails, the client's response is cut, not ended."""
    url, client = site
    file_id = new_file_id()
    await store(storage, file_id, b"v" * 5000)
    # Cut before the head went out, or after: either way never a whole answer.
    with pytest.raises((ResponseFailed, ResponseNeverReceived)):
        response = await client.get(url, params={"id": file_id, "delete": "1"})
        await response.content()


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_failed_part_aborts_and_refuses(storage: S3Storage) -> None:
    """A part that fails midway: writes go on quietly, commit refuses, nothing stays."""
    file_id = new_file_id()
    pending = storage.begin_write(file_id)
    for _ in range(6):
        waiting = pending.write(b"p" * MiB)
        if waiting is not None:
            await waiting
    # Another node's sweep (or an operator) aborts the upload under our feet.
    await deferLater(reactor, 0.2, lambda: None)
    assert await storage.abort_stale_uploads(-60) == 1
    for _ in range(12):
        waiting = pending.write(b"p" * MiB)
        if waiting is not None:
            await waiting  # fires, never fails
    with pytest.raises(StorageError) as refused:
        await pending.commit(info_for(file_id, b""))
    assert not isinstance(refused.value, DuplicateFile)
    assert await storage.stat(file_id) is None
    assert await multipart_uploads(storage) == []


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_missing_bucket_refuses(
    make_storage: Callable[..., Any],
) -> None:
    """A store that refuses every write gives a StorageError, small or multipart."""
    storage = await make_storage(bucket="no-such-bucket-here")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        await store(storage, new_file_id(), b"small")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        await store(storage, new_file_id(), b"b" * (11 * MiB))


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_unreachable_store_refuses(
    make_storage: Callable[..., Any],
) -> None:
    """A store that cannot be reached: StoreDown (503), not a crash."""
    import socket

    # Bound but not listening, and held: connections are refused, and no
    # one else can take the port meanwhile.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refusing = s.getsockname()[1]
        storage = await make_storage(endpoint=f"http://127.0.0.1:{refusing}")
        with pytest.raises(StoreDown, match="Storage unavailable"):
            await store(storage, new_file_id(), b"small")
    assert http_status(StoreDown("x")) == 503


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_https_endpoint(
    seaweedfs: SeaweedFS,  # noqa: F811
    make_storage: Callable[..., Any],
) -> None:
    """Over an https:// endpoint (certificate checked) files go up and come back."""
    if seaweedfs.https_endpoint is None:
        pytest.skip("openssl is needed for the test certificate")
    from twisted.internet.ssl import Certificate
    from twisted.web.client import BrowserLikePolicyForHTTPS

    trust = Certificate.loadPEM(seaweedfs.cert_path.read_bytes())
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
    storage = await make_storage(endpoint=seaweedfs.https_endpoint, agent=agent)
    file_id = new_file_id()
    data = os.urandom(6 * MiB)
    info = await store(storage, file_id, data)
    assert await storage.stat(file_id) == info
    assert await storage.list_ids() == {file_id}
    # An agent that does not trust the certificate gets nowhere.
    untrusting = await make_storage(endpoint=seaweedfs.https_endpoint)
    with pytest.raises(StorageError):
        await store(untrusting, new_file_id(), b"x")
    await pool.closeCachedConnections()


@given(
    key=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)
)
def test_object_url_keeps_any_key(key: str) -> None:
    """Whatever the key, the URL's path decodes back to bucket and key."""
    from urllib.parse import unquote, urlsplit

    settings = S3Settings(bucket="bkt", endpoint="http://127.0.0.1:9000")
    path = urlsplit(object_url(settings, key)).path
    assert unquote(path) == "/bkt/" + key


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_unusual_prefix(make_storage: Callable[..., Any]) -> None:
    """A prefix with spaces, plus signs, percent signs and non-ASCII is signed right."""
    storage = await make_storage(prefix=f"up lo+ads%{next(_prefixes)}/ü/")
    file_id = new_file_id()
    info = await store(storage, file_id, b"odd")
    assert await storage.stat(file_id) == info
    assert await storage.list_ids() == {file_id}
    assert await storage.delete(file_id) is True


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_slow_client_pauses_s3(storage: S3Storage, site: tuple[str, Any]) -> None:
    """A client that stops reading stops the S3 body too: nothing piles up here."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    url, _ = site
    port = int(url.rsplit(":", 1)[1].strip("/"))
    file_id = new_file_id()
    data = os.urandom(23 * MiB)
    await store(storage, file_id, data)
    done: Deferred[bytes] = Deferred()

    class Slow(Protocol):
        """Asks for the file, then reads nothing until told to."""

        def __init__(self) -> None:
            self.chunks: list[bytes] = []

        def connectionMade(self) -> None:
            assert self.transport is not None
            self.transport.write(
                f"GET /?id={file_id} HTTP/1.1\r\nHost: x\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            self.transport.pauseProducing()  # type: ignore[attr-defined]

        def dataReceived(self, chunk: bytes) -> None:
            self.chunks.append(chunk)

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
            done.callback(b"".join(self.chunks))

    tracemalloc.start()
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        slow = await connectProtocol(endpoint, Slow())
        await deferLater(reactor, 1.0, lambda: None)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Loopback socket buffers hold a few MiB; the rest must still be in S3.
    assert held < 8 * MiB
    slow.transport.resumeProducing()
    answer = await done
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(data)


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_first_request_starts_the_client(
    seaweedfs: SeaweedFS,  # noqa: F811
    bucket: str,
) -> None:
    """A storage whose start() was not called resolves credentials on first use."""
    settings = S3Settings(
        bucket=bucket,
        prefix=f"t{next(_prefixes)}/",
        endpoint=seaweedfs.endpoint,
        access_key_id=seaweedfs.access_key,
        secret_access_key=seaweedfs.secret_key,
    )
    storage = S3Storage(settings, reactor)
    try:
        file_id = new_file_id()
        # Two at once, before anything resolved the credentials.
        first, second = storage.stat(file_id), storage.list_ids()
        assert await first is None
        assert await second == set()
        await store(storage, file_id, b"late start")
        assert await storage.list_ids() == {file_id}
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_no_credentials_fails_start() -> None:
    """Without keys anywhere, start() fails with a ConfigError naming credentials."""
    from httpupload.errors import ConfigError

    storage = S3Storage(
        S3Settings(bucket="bkt", endpoint="http://127.0.0.1:9"),
        reactor,
        credential_chain=lambda: None,  # the chain found nothing
    )
    with pytest.raises(ConfigError, match="credentials"):
        await storage.start()
    await storage.close()
