"""S3 direct mode: presigned slot URLs, and records completed from the bucket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
import treq
from s3server import SeaweedFS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.words.xish import domish
from wokkel import disco, generic
from wokkel.test import helpers

from httpupload.config_s3 import S3Settings
from httpupload.metadata import FileRecord
from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.policy import SlotPolicy
from httpupload.slots import Slot, SlotSigner, new_file_id
from httpupload.storage import FileInfo
from httpupload.storage.s3 import S3Storage
from httpupload.storage.s3.direct import DirectUrls, complete_direct_uploads
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.stanzas import NS_UPLOAD, NS_UPLOAD_LEGACY

DAY = 86400.0


class FakeBucket:
    """Presigns by formula and holds objects by id, as S3Storage would."""

    def __init__(self) -> None:
        self.objects: dict[str, FileInfo] = {}
        self.started = 0
        self.presigned: list[tuple[str, int, str | None, int]] = []

    def start(self) -> Deferred[None]:
        self.started += 1
        return succeed(None)

    def presign_put(
        self, file_id: str, size: int, content_type: str | None, expires_in: int
    ) -> tuple[str, dict[str, str]]:
        self.presigned.append((file_id, size, content_type, expires_in))
        return f"https://s3.test/bucket/{file_id}?X-Amz-Signature=abc", {}

    def public_url(self, file_id: str, filename: str) -> str:
        return f"https://cdn.test/{file_id}?filename={filename}"

    def stat(self, file_id: str) -> Deferred[FileInfo | None]:
        return succeed(self.objects.get(file_id))


def ask(bucket: FakeBucket, namespace: str = NS_UPLOAD) -> domish.Element:
    clock = Clock()
    clock.advance(1_700_000_000)
    manager = helpers.TestableStreamManager(reactor=clock)
    handlers = (
        generic.FallbackHandler(),
        disco.DiscoHandler(),
        UploadHandler(
            SlotPolicy(10_000, ("montague.tld",)),
            SlotSigner(b"k" * 32, clock),
            "https://upload.montague.tld/",
            "https://upload.montague.tld/",
            300,
            direct_urls=DirectUrls(bucket),
        ),
    )
    for handler in handlers:
        handler.setHandlerParent(manager)
    iq = domish.Element((None, "iq"))
    iq["type"], iq["id"] = "get", "1"
    iq["from"], iq["to"] = "romeo@montague.tld/garden", "upload.montague.tld"
    request = iq.addElement((namespace, "request"))
    if namespace == NS_UPLOAD:
        request["filename"], request["size"] = "a b.jpg", "1234"
        request["content-type"] = "image/jpeg"
    else:
        request.addElement("filename", content="a b.jpg")
        request.addElement("size", content="1234")
        request.addElement("content-type", content="image/jpeg")
    manager.stub.send(iq)
    return manager.stub.output[-1]


def test_a_slot_is_a_presigned_put_and_a_public_get() -> None:
    """The PUT URL is the store's, bound to the slot; no slot header is given."""
    bucket = FakeBucket()
    reply = ask(bucket)
    assert reply["type"] == "result"
    put = reply.slot.put
    assert put["url"].startswith("https://s3.test/bucket/")
    assert list(put.elements()) == []  # no <header>: the URL carries it all
    file_id = put["url"].split("/")[-1].split("?")[0]
    assert reply.slot.get["url"] == f"https://cdn.test/{file_id}?filename=a b.jpg"
    assert bucket.presigned == [(file_id, 1234, "image/jpeg", 300)]
    assert bucket.started == 1


def test_legacy_namespaces_get_the_same_urls() -> None:
    """The legacy namespaces' slots carry the same presigned PUT and public GET."""
    bucket = FakeBucket()
    reply = ask(bucket, NS_UPLOAD_LEGACY)
    assert reply["type"] == "result"
    assert str(reply.slot.put).startswith("https://s3.test/bucket/")
    assert str(reply.slot.get).startswith("https://cdn.test/")


@pytest.fixture
def store() -> MemoryMetadataStore:
    """A metadata store in memory: every Deferred fired, no thread."""
    return MemoryMetadataStore()


def slot_record(file_id: str, now: float, size: int = 5) -> FileRecord:
    return FileRecord(
        file_id, "romeo@montague.tld", "a.txt", size, None, "message",
        created=now - 400, slot_expires=now - 100, expires=now + 30 * DAY,
    )  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_expired_slots_with_objects_are_recorded_stored(
    store: MemoryMetadataStore,
) -> None:
    """Found and of the slot's size: stored (and counted, and due to expire)."""
    now = 1_700_000_000.0
    bucket = FakeBucket()
    found, missing, wrong_size = new_file_id(), new_file_id(), new_file_id()
    live = new_file_id()
    for file_id in (found, missing, wrong_size):
        await store.reserve(slot_record(file_id, now), DAY, lambda usage: None)
    live_record = FileRecord(
        live, "romeo@montague.tld", "b.txt", 5, None, "message",
        created=now, slot_expires=now + 300, expires=now + DAY,
    )  # fmt: skip
    await store.reserve(live_record, DAY, lambda usage: None)
    bucket.objects[found] = FileInfo(found, "", 5, "text/plain", "", now - 200)
    bucket.objects[wrong_size] = FileInfo(wrong_size, "", 9, "", "", now - 200)
    bucket.objects[live] = FileInfo(live, "", 5, "", "", now - 1)

    assert await complete_direct_uploads(store, bucket, now, 100) == 1
    record = await store.get(found)
    assert record is not None and record.completed
    assert record.content_type == "text/plain"
    assert record.served_at(now)
    for other in (missing, wrong_size, live):
        other_record = await store.get(other)
        assert other_record is not None and not other_record.completed
    # Nothing more to find the second time.
    assert await complete_direct_uploads(store, bucket, now, 100) == 0


# -- against SeaweedFS: what the presigned PUT takes ----------------------------

HTML = b"<html><script>alert(document.domain)</script></html>"


@pytest_twisted.async_yield_fixture
async def bucket_urls(
    seaweedfs: SeaweedFS,
) -> AsyncIterator[tuple[DirectUrls, Any]]:
    """DirectUrls over a real SeaweedFS bucket anyone may read, and an HTTP client."""
    from twisted.web.client import Agent, HTTPConnectionPool

    bucket = seaweedfs.make_bucket()
    settings = S3Settings(
        bucket=bucket,
        prefix="direct/",
        endpoint=seaweedfs.endpoint,
        access_key_id=seaweedfs.access_key,
        secret_access_key=seaweedfs.secret_key,
        mode="direct",
        public_base_url=f"{seaweedfs.endpoint}/{bucket}/",
    )
    storage = S3Storage(settings, reactor)
    pool = HTTPConnectionPool(reactor, persistent=False)
    yield DirectUrls(storage), treq.client.HTTPClient(Agent(reactor, pool=pool))
    await pool.closeCachedConnections()
    await storage.close()


def direct_slot(content_type: str | None, size: int = len(HTML)) -> Slot:
    return Slot(new_file_id(), "page.html", size, content_type, 0, "romeo@montague.tld")


async def put(client: Any, url: str, body: bytes, content_type: str | None) -> Any:
    """A client's PUT with this Content-Type (None: no such header); the response."""
    headers = {"Content-Type": content_type} if content_type is not None else {}
    response = await client.put(url, data=body, headers=headers)
    response.text = (await response.content()).decode("utf-8", "replace")
    return response


@pytest.mark.enable_socket
@pytest.mark.parametrize("sent", ["text/html", None, "", "Application/Octet-Stream"])
@pytest_twisted.ensureDeferred
async def test_an_untyped_slot_refuses_a_put_of_any_other_type(
    bucket_urls: tuple[DirectUrls, Any], sent: str | None
) -> None:
    """No type in the slot: a PUT naming another type, or none, is refused (403)."""
    urls, client = bucket_urls
    slot = direct_slot(None)
    put_url, get_url = await urls.urls(slot, 300)
    response = await put(client, put_url, HTML, sent)
    assert response.code == 403
    # What docs/s3.md tells operators a client sees.
    assert "SignatureDoesNotMatch" in response.text
    assert await urls.storage.stat(slot.file_id) is None
    missing = await client.get(get_url)
    await missing.content()
    assert missing.code == 404


@pytest.mark.enable_socket
@pytest_twisted.ensureDeferred
async def test_an_untyped_slot_stores_octet_stream(
    bucket_urls: tuple[DirectUrls, Any],
) -> None:
    """No type in the slot: the bucket serves the upload as application/octet-stream."""
    urls, client = bucket_urls
    slot = direct_slot(None)
    put_url, get_url = await urls.urls(slot, 300)
    response = await put(client, put_url, HTML, "application/octet-stream")
    assert response.code == 200
    served = await client.get(get_url)
    assert await served.content() == HTML
    assert served.headers.getRawHeaders("Content-Type") == ["application/octet-stream"]


@pytest.mark.enable_socket
@pytest.mark.parametrize(("sent", "code"), [("image/png", 200), (None, 403)])
@pytest_twisted.ensureDeferred
async def test_a_typed_slot_takes_its_type_only(
    bucket_urls: tuple[DirectUrls, Any], sent: str | None, code: int
) -> None:
    """A slot naming a type: a PUT with that type is stored, one without refused."""
    urls, client = bucket_urls
    slot = direct_slot("image/png", size=5)
    put_url, get_url = await urls.urls(slot, 300)
    assert (await put(client, put_url, b"\x89PNG\r", sent)).code == code
    served = await client.get(get_url)
    await served.content()
    assert served.code == (200 if code == 200 else 404)
    if code == 200:
        assert served.headers.getRawHeaders("Content-Type") == ["image/png"]


def test_direct_mode_loads_no_botocore() -> None:
    """``storage.s3.direct`` (every node imports it) loads no botocore, no S3Storage."""
    import subprocess
    import sys

    code = (
        "import sys, httpupload.storage.s3.direct; "
        "print(sorted(m for m in sys.modules if m.startswith('botocore') "
        "or m == 'httpupload.storage.s3.backend'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
