"""Several nodes, as a large deployment runs them, every part real.

One component node (XMPP only) mints slots; two HTTP nodes behind nginx take
the PUTs and GETs; files go to a real SeaweedFS bucket through the S3 backend,
records to a real PostgreSQL. slixmpp uploads through the balancer and the
requests land on both nodes; a quota counts what both stored; an HTTP node
killed in the middle of an upload leaves the slot to the other; a standby
component takes over when the active one dies; expiry removes objects from
the bucket.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import pytest
import slixmpp
from balancer import Balancer, nginx_available
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from client import SlotRefusedError, XmppClient, download, poll
from conftest import (
    DOMAIN,
    SPARE_COMPONENT_JID,
    SPARE_COMPONENT_SECRET,
    register_service,
)
from prosody import Prosody, free_port
from twistd import ONLINE_PATTERN, HttpUpload

pytestmark = pytest.mark.integration

SIGNING_KEY = secrets.token_hex(32)
FILES_PER_WINDOW = 6
RETENTION = 3  # seconds an ephemeral file is served: expiry within the test
PURPOSE_NS = "urn:xmpp:http:upload:purpose:0"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Cluster:
    balancer: Balancer
    web: list[HttpUpload]
    components: list[HttpUpload]
    bucket: str
    s3: Any  # the SeaweedFS runner
    dsn: str
    prosody: Prosody

    def objects(self) -> set[str]:
        """Every object key in the bucket (one page: tests hold few)."""
        url = f"{self.s3.endpoint}/{self.bucket}?list-type=2"
        aws = AWSRequest(method="GET", url=url)
        credentials = Credentials(self.s3.access_key, self.s3.secret_key)
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(aws)
        request = urllib.request.Request(url, headers=dict(aws.headers))  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            tree = ElementTree.fromstring(response.read())  # noqa: S314 (our S3)
        return {
            element.text or ""
            for element in tree.iter()
            if element.tag.endswith("}Key") or element.tag == "Key"
        }


def _node(
    prosody: Prosody,
    roles: list[str],
    name: str,
    overrides: dict[str, Any],
    http_port: int = 0,
) -> HttpUpload:
    """A node's runner, set up; an HTTP node listens on ``http_port``."""
    http = {**overrides["http"], "listen": None}
    if "http" in roles:
        http["listen"] = f"tcp:{http_port}:interface=127.0.0.1"
    node = HttpUpload(
        server_port=prosody.component_port,
        secret=SPARE_COMPONENT_SECRET,
        component_jid=SPARE_COMPONENT_JID,
        domains=[DOMAIN],
        http_port=http_port or 1,
        overrides={
            **overrides,
            "http": http,
            "node": {"roles": roles, "name": name},
            "metrics": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
        },
    )
    register_service(node)
    node.setup()
    return node


def _start(node: HttpUpload, *, online: bool = True) -> None:
    """An HTTP node is up when its port is, a component node when online."""
    node.start(wait_online=online and not node.serves_http)


def _kill(node: HttpUpload) -> None:
    assert node.process is not None
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(timeout=10)
    node.process = None


@pytest.fixture(scope="module")
def cluster(prosody: Prosody, postgresql: Any, seaweedfs: Any) -> Iterator[Cluster]:
    if not nginx_available():
        message = "nginx not found (Debian package nginx)"
        if os.environ.get("HTTPUPLOAD_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    bucket = seaweedfs.make_bucket()
    dsn = postgresql.new_database()
    web_ports = [free_port(), free_port()]
    balancer = Balancer(upstream_ports=web_ports)
    balancer.setup()
    overrides: dict[str, Any] = {
        "http": {
            "public_url": balancer.url,
            "signing_key": SIGNING_KEY,
            "trusted_proxies": ["127.0.0.1"],
        },
        "storage": {"backend": "s3", "path": None},
        "storage.s3": {
            "bucket": bucket,
            "endpoint": seaweedfs.endpoint,
            "region": "us-east-1",
            "access_key_id": seaweedfs.access_key,
            "secret_access_key": seaweedfs.secret_key,
            "addressing": "path",
            "part_size": 5 * 1024 * 1024,
        },
        "metadata": {"backend": "postgresql", "dsn": dsn},
        "quotas": {"files_per_window": FILES_PER_WINDOW},
    }
    made: list[HttpUpload] = []
    try:
        web = []
        for i, port in enumerate(web_ports, start=1):
            node = _node(prosody, ["http"], f"web-{i}", overrides, port)
            made.append(node)
            _start(node)
            web.append(node)
        components = []
        for i in (1, 2):
            node = _node(prosody, ["component"], f"xmpp-{i}", overrides)
            made.append(node)
            components.append(node)
        _start(components[0])
        balancer.start()
        yield Cluster(balancer, web, components, bucket, seaweedfs, dsn, prosody)
    finally:
        balancer.cleanup()
        for node in made:
            node.cleanup()


def _upload(client: XmppClient, name: str, data: bytes) -> str:
    """slixmpp's own XEP-0363 upload (slot, then PUT with aiohttp)."""
    return client.run(
        client.xmpp.plugin["xep_0363"].upload_file(
            name,
            domain=slixmpp.JID(SPARE_COMPONENT_JID),
            size=len(data),
            input_file=io.BytesIO(data),
            timeout=client.timeout,
        )
    )


def _put(url: str, data: bytes, headers: dict[str, str]) -> int:
    # urllib would send a form's Content-Type otherwise.
    headers = {"Content-Type": "application/octet-stream", **headers}
    request = urllib.request.Request(  # noqa: S310
        url, data=data, method="PUT", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as e:
        e.close()
        return e.code


def test_uploads_land_on_both_nodes_and_count_against_one_quota(
    cluster: Cluster, connect: Any
) -> None:
    """PUTs and GETs behind nginx reach both HTTP nodes, and one user's quota
    counts the uploads of every node."""
    password = "carol-password-for-tests"
    cluster.prosody.register("carol", password)
    client = connect(jid=f"carol@{DOMAIN}", password=password)
    files = {f"file-{i}.bin": os.urandom(100_000 + i) for i in range(FILES_PER_WINDOW)}
    urls = {}
    for name, data in files.items():
        url = _upload(client, name, data)
        assert url.startswith(cluster.balancer.url)
        urls[name] = url
    for name, url in urls.items():
        status, _headers, body = download(url)
        assert (status, body) == (200, files[name])
    # Round robin: both nodes took PUTs and GETs.
    web_addresses = {f"127.0.0.1:{node.http_port}" for node in cluster.web}
    assert set(cluster.balancer.nodes_used("PUT")) == web_addresses
    assert set(cluster.balancer.nodes_used("GET")) == web_addresses
    # Every file is an object in the bucket.
    ids = {url.split("/")[-2] for url in urls.values()}
    assert ids <= cluster.objects()
    # The quota saw every upload, whichever node stored it.
    with pytest.raises(SlotRefusedError) as refused:
        client.request_slot(SPARE_COMPONENT_JID, "one-too-many.bin", 10)
    assert refused.value.condition == "resource-constraint"


def _slow_put(url: str, headers: dict[str, str], data: bytes) -> None:
    """PUT through the balancer: half at once, then a trickle until cut off."""
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = [f"PUT /{parts[3]} HTTP/1.1", f"Host: {parts[2]}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += [f"Content-Length: {len(data)}", "", ""]
        sock.sendall("\r\n".join(head).encode())
        half = len(data) // 2
        sock.sendall(data[:half])
        try:
            for offset in range(half, len(data), 65536):
                time.sleep(0.05)
                sock.sendall(data[offset : offset + 65536])
        except OSError:
            return


def _in_flight(node: HttpUpload) -> int:
    port = int(node.overrides["metrics"]["listen"].split(":")[1])
    url = f"http://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(json.loads(response.read())["uploads_in_flight"])


def test_a_node_killed_mid_upload_leaves_the_slot_to_the_other(
    cluster: Cluster, connect: Any
) -> None:
    """An HTTP node killed mid-upload serves nothing partial; the client's retry of
    the same slot lands on the other node."""
    client = connect()
    data = os.urandom(12 * 1024 * 1024)
    slot = client.request_slot(SPARE_COMPONENT_JID, "survivor.bin", len(data))
    putting = threading.Thread(
        target=_slow_put, args=(slot.put_url, slot.headers, data), daemon=True
    )
    putting.start()
    busy = poll(lambda: next(n for n in cluster.web if _in_flight(n) > 0), 20, 0.05)
    _kill(busy)
    putting.join(timeout=30)
    # The client's retry of the same slot, through the balancer, to the other
    # (a client retries a 502 from the balancer too, as the dead node's
    # connections are being found out).
    statuses = [_put(slot.put_url, data, slot.headers)]
    while statuses[-1] in (502, 503) and len(statuses) < 3:
        time.sleep(0.5)
        statuses.append(_put(slot.put_url, data, slot.headers))
    assert statuses[-1] == 201, statuses
    status, _headers, body = download(slot.get_url)
    assert (status, body) == (200, data)
    _start(busy)  # back for the tests after this one


def test_the_standby_component_takes_over(cluster: Cluster, connect: Any) -> None:
    """A standby component node takes over the component JID within seconds of
    the active one being killed."""
    active, standby = cluster.components
    offset = standby.log_offset()
    _start(standby, online=False)
    standby.wait_for_log("standing by", timeout=20, since=offset)
    client = connect()
    client.request_slot(SPARE_COMPONENT_JID, "before.bin", 10)
    _kill(active)
    killed = time.monotonic()
    standby.wait_for_log(ONLINE_PATTERN, timeout=20, since=offset)
    took_over = time.monotonic() - killed
    slot = poll(
        lambda: client.request_slot(SPARE_COMPONENT_JID, "after.bin", 10), timeout=20
    )
    assert slot.put_url.startswith(cluster.balancer.url)
    print(f"standby took over {took_over:.1f} s after the active node was killed")
    assert took_over < 10


def test_expiry_removes_objects_from_the_bucket(cluster: Cluster, connect: Any) -> None:
    """An expired file answers 404 on both nodes at once, and the operator's
    purge-expired removes its object from the bucket."""
    client = connect()
    data = b"gone soon"
    expire = time.time() + RETENTION
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expire))
    reply = client.raw_iq(
        SPARE_COMPONENT_JID,
        "<request xmlns='urn:xmpp:http:upload:0' filename='short.txt' "
        f"size='{len(data)}'><ephemeral xmlns='{PURPOSE_NS}' "
        f"expire-before='{stamp}'/></request>",
    )
    assert reply.get("type") == "result", ElementTree.tostring(reply)
    ns = "{urn:xmpp:http:upload:0}"
    put = reply.find(f"{ns}slot/{ns}put")
    get = reply.find(f"{ns}slot/{ns}get")
    assert put is not None and get is not None
    headers = {h.get("name", ""): h.text or "" for h in put.findall(f"{ns}header")}
    assert _put(put.get("url", ""), data, headers) == 201
    url = get.get("url", "")
    file_id = url.split("/")[-2]
    assert download(url)[0] == 200
    assert file_id in cluster.objects()
    time.sleep(max(0.0, expire - time.time()) + 1.0)
    # Not served the moment it expires, by either node.
    assert download(url)[0] == 404
    assert download(url)[0] == 404
    done = _run_admin(cluster, "purge-expired")
    assert done.returncode == 0, done.stderr
    assert file_id not in cluster.objects()


def test_a_take_down_from_another_process_is_404_on_every_node(
    cluster: Cluster, connect: Any
) -> None:
    """Nodes remember stored records for downloads; a file removed elsewhere
    (operator command, another node's sweep) is still 404 everywhere at once,
    because files go before their records."""
    client = connect()
    data = os.urandom(5000)
    url = _upload(client, "taken.bin", data)
    for _ in range(4):  # both nodes serve it, and remember its record
        assert download(url)[2] == data
    done = _run_admin(cluster, "take-down", url)
    assert done.returncode == 0, done.stderr
    assert url.split("/")[-2] not in cluster.objects()
    for _ in range(4):
        assert download(url)[0] == 404


def _run_admin(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    node = cluster.web[0]
    return subprocess.run(
        [sys.executable, "-m", "httpupload", "--config", str(node.config_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=node.environment(),
        cwd=REPO,
    )
