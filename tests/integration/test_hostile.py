"""A hostile client against a real ``twistd -n httpupload``, over real sockets.

One service of its own for the module (the spare component of the session's
Prosody), started under umask 022 with a short idle timeout, so that the file
modes, the slow reader's cut-off and the metrics after a flood are the
process's own and no other test's.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from client import SlotRefusedError, XmppClient, download
from conftest import (
    COMPONENT_SECRET,
    MAX_FILE_SIZE,
    SPARE_COMPONENT_JID,
    SPARE_COMPONENT_SECRET,
    forget_service,
    register_service,
)
from prosody import Prosody, free_port
from twistd import HttpUpload

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
IDLE_TIMEOUT = 3
#: How long past the idle timeout the service may take to cut off a reader.
CUT_OFF_SLACK = 6.0


@pytest.fixture(scope="module")
def hostile(prosody: Prosody) -> Iterator[HttpUpload]:
    """A service started under umask 022, idle_timeout 3 s, metrics on a known port,
    logging JSON (every field of every event is then in the log)."""
    assert COMPONENT_SECRET != SPARE_COMPONENT_SECRET
    metrics_port = free_port()
    service = register_service(
        HttpUpload(
            server_port=prosody.component_port,
            secret=SPARE_COMPONENT_SECRET,
            component_jid=SPARE_COMPONENT_JID,
            domains=["localhost"],
            max_file_size=MAX_FILE_SIZE,
            json_log=True,
            overrides={
                "http": {"idle_timeout": IDLE_TIMEOUT},
                "metrics": {"listen": f"tcp:{metrics_port}:interface=127.0.0.1"},
            },
        )
    )
    service.metrics_port = metrics_port
    old_umask = os.umask(0o022)
    try:
        service.setup()
        service.start(wait_online=True, timeout=30)
    finally:
        os.umask(old_umask)
    try:
        yield service
    finally:
        service.cleanup()
        forget_service(service)


def _upload(client: XmppClient, service: HttpUpload, name: str, data: bytes) -> str:
    """PUT data into a slot of the given service; return the GET URL."""
    slot = client.request_slot(service.component_jid, name, len(data))
    request = urllib.request.Request(  # noqa: S310 - our own http:// URL
        slot.put_url,
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream", **slot.headers},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        assert response.status == 201
    return slot.get_url


def _raw(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send payload on a fresh connection and read until the server closes it.

    The payload's last request should say ``Connection: close`` (or be one the
    server answers by closing): a half-close from us would end the connection
    before a slower answer (twisted.web takes EOF for the client gone).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _metrics(service: HttpUpload) -> str:
    port = service.metrics_port
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_invented_methods_do_not_grow_the_metrics(hostile: HttpUpload) -> None:
    """2,000 pipelined requests with invented methods add no metric series."""
    before = _metrics(hostile)
    methods = (f"ZZ{n:04d}" + "Q" * 2000 for n in range(2000))
    # Pipelined in batches on a few connections, as the flood that found it was.
    batch = 200
    for _ in range(0, 2000, batch):
        payload = b"".join(
            f"{m} /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            for m in (next(methods) for _ in range(batch))
        )
        payload += b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        answer = _raw(hostile.http_port, payload, timeout=30)
        assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    after = _metrics(hostile)
    series = [
        line
        for line in after.splitlines()
        if line.startswith("httpupload_http_responses_total{")
    ]
    assert not any("ZZ" in line for line in series)
    assert len(series) <= 30, series
    assert len(after) < len(before) + 10_000


def test_a_range_of_thousands_of_digits_is_answered(
    client: XmppClient, hostile: HttpUpload
) -> None:
    """Range: bytes=0-<5,000 digits> gets an answer at once, and nothing escapes."""
    data = os.urandom(4096)
    path = urlsplit(_upload(client, hostile, "range.bin", data)).path
    since = hostile.log_offset()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Range: bytes=0-{'9' * 5000}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = _raw(hostile.http_port, request)
    status = answer.split(b"\r\n", 1)[0]
    assert status in (b"HTTP/1.1 200 OK", b"HTTP/1.1 206 Partial Content"), status
    assert answer.endswith(data)
    huge_length = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {'9' * 5000}\r\nConnection: close\r\n\r\n"
    ).encode()
    assert _raw(hostile.http_port, huge_length).startswith(b"HTTP/1.1 400 ")
    time.sleep(0.5)
    log = hostile.log_text()[since:]
    assert "Traceback" not in log, log
    assert "CRITICAL" not in log, log


def test_a_reader_that_never_reads_is_cut_off(
    client: XmppClient, hostile: HttpUpload
) -> None:
    """A GET of 20 MiB whose client never reads is closed after the idle timeout."""
    size = 20 * MIB
    path = urlsplit(_upload(client, hostile, "slow.bin", os.urandom(size))).path
    with socket.create_connection(("127.0.0.1", hostile.http_port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        time.sleep(IDLE_TIMEOUT + CUT_OFF_SLACK)
        # Cut off by now: what is left in the buffers ends in EOF or a reset,
        # far short of the file. Not cut off: reading makes the rest flow.
        sock.settimeout(10)
        received = 0
        try:
            while chunk := sock.recv(1024 * 1024):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < size // 2, received


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in [root, *root.rglob("*")]
        if not p.is_symlink()
    }


def _loose(modes: dict[str, int]) -> dict[str, str]:
    return {name: oct(mode) for name, mode in modes.items() if mode & 0o077}


def test_stored_files_and_records_are_owner_only(
    client: XmppClient, hostile: HttpUpload
) -> None:
    """Under umask 022 every stored file, folder and database file is owner-only,
    and a restart tightens what was left readable."""
    get_url = _upload(client, hostile, "private.txt", b"not for other users")
    storage = hostile.storage_path
    assert _loose(_modes(storage)) == {}
    # What an earlier version left: readable by all.
    for path in [storage, *storage.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert _loose(_modes(storage))
    hostile.stop()
    hostile.start(wait_online=True, timeout=30)
    assert _loose(_modes(storage)) == {}
    assert download(get_url)[::2] == (200, b"not for other users")


def test_no_log_line_holds_a_whole_file_id(
    client: XmppClient, hostile: HttpUpload
) -> None:
    """Uploads, downloads and refusals leave no whole file id in the log."""
    get_url = _upload(client, hostile, "secret-name.txt", b"x" * 10)
    file_id = urlsplit(get_url).path.split("/")[-2]
    download(get_url)
    download(get_url.replace(file_id, file_id[:-1] + "A"))
    _raw(hostile.http_port, f"PUT /{file_id}/x HTTP/1.1\r\n\r\n".encode())
    time.sleep(0.5)
    log = hostile.log_text()
    assert re.search(re.escape(file_id), log) is None
    assert re.search(re.escape(file_id[:12]), log) is None


def test_default_limits_bound_unused_slots(
    client: XmppClient, hostile: HttpUpload
) -> None:
    """With the default config, slots asked for and never used are bounded: the
    11th is wait/resource-constraint with a retry stamp. (At the maximum size,
    the default daily budget of ten times max_file_size would refuse one earlier.)"""
    granted = 0
    with pytest.raises(SlotRefusedError) as refused:
        for n in range(100):
            client.request_slot(hostile.component_jid, f"unused-{n}.bin", MIB)
            granted += 1
    assert granted == 10
    error = refused.value
    assert (error.error_type, error.condition) == ("wait", "resource-constraint")
    assert "retry" in error.upload_elements, error.xml
    assert "not yet used" in error.text
