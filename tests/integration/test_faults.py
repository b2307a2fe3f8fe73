"""Faults with real processes: kill -9 mid-upload, an XMPP server restart, SIGTERM.

The services killed here are extra ``twistd -n httpupload`` processes of their own
(``make_spare_service``: their own storage folder, connected to the session's Prosody
as a second component), so the session's service is not disturbed. The Prosody
restart test uses the session's Prosody and service, as a real deployment would.

Large bodies go over a plain socket, a piece at a time, so a test knows exactly how
much it sent and can watch the partial file grow on disk before it pulls the plug.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from client import (
    DisconnectedError,
    Slot,
    SlotRefusedError,
    XmppClient,
    XmppClientError,
    download,
)
from prosody import Prosody, port_open
from twistd import ONLINE_PATTERN, HttpUpload

from httpupload.storage.filesystem import read_trailer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
#: The upload that is in flight when the service is killed.
BIG = 200 * MIB
#: How much of it is sent before the kill, and how much must be on disk by then.
SENT_BEFORE_KILL = 24 * MIB
ON_DISK_BEFORE_KILL = 8 * MIB
#: The component must be back this soon after Prosody accepts connections again.
RECONNECT_BOUND = 5.0
#: A slot request without an answer after this long counts as lost.
REQUEST_TIMEOUT = 5.0
#: How long a SIGTERM'd service may take to exit (a drain's grace period included).
EXIT_TIMEOUT = 40.0
OCTETS = "application/octet-stream"


# ---- HTTP over a plain socket


def digest_of(data: bytes) -> str:
    """An RFC 9530 Repr-Digest value for data."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_response(raw: bytes) -> Response | None:
    """Parse a whole HTTP/1.1 response read until close; None if there is none."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, headers, body)


class RawPut:
    """A PUT to a slot over a plain socket, its body sent when the test says so."""

    def __init__(self, slot: Slot, length: int, content_type: str = OCTETS) -> None:
        url = urlsplit(slot.put_url)
        assert url.hostname is not None and url.port is not None
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        self.sent = 0
        head = [
            f"PUT {url.path} HTTP/1.1",
            f"Host: {url.netloc}",
            f"Content-Length: {length}",
            f"Content-Type: {content_type}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in slot.headers.items()),
        ]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes, piece: int = 256 * 1024) -> None:
        view = memoryview(data)
        for start in range(0, len(view), piece):
            chunk = view[start : start + piece]
            self.sock.sendall(chunk)
            self.sent += len(chunk)

    def response(self) -> Response | None:
        """Read until the server closes; the response, or None if none came."""
        raw = bytearray()
        try:
            while chunk := self.sock.recv(65536):
                raw += chunk
        except OSError:
            pass
        return parse_response(bytes(raw))

    def close(self) -> None:
        self.sock.close()


def put(slot: Slot, data: bytes, content_type: str = OCTETS) -> Response:
    """PUT data to a slot with urllib; return the response (even an error)."""
    request = urllib.request.Request(  # noqa: S310 - our own http:// URL
        slot.put_url,
        data=data,
        method="PUT",
        headers={"Content-Type": content_type, **slot.headers},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
        headers = {name.lower(): value for name, value in reply.headers.items()}
        return Response(reply.status, headers, reply.read())


def get_digest(url: str) -> tuple[int, str | None, int, str]:
    """GET url, hashing the body as it streams: status, Repr-Digest, length, digest."""
    request = urllib.request.Request(url)  # noqa: S310
    sha256 = hashlib.sha256()
    length = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
            while chunk := reply.read(MIB):
                sha256.update(chunk)
                length += len(chunk)
            status, header = reply.status, reply.headers.get("Repr-Digest")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, None, 0, ""
    value = "sha-256=:" + base64.b64encode(sha256.digest()).decode() + ":"
    return status, header, length, value


# ---- storage, looked at from outside


def file_id(slot: Slot) -> str:
    return urlsplit(slot.get_url).path.rstrip("/").split("/")[-2]


def partials(storage: Path, folder: str = "partial") -> list[str]:
    """What is in <storage>/partial (slots' partial uploads, kept to resume,
    #12) or another folder (tmp/: writes that are not resumable)."""
    tmp = storage / folder
    return sorted(entry.name for entry in tmp.iterdir()) if tmp.exists() else []


def partial_sizes(storage: Path) -> list[int]:
    return [
        (storage / folder / name).stat().st_size
        for folder in ("tmp", "partial")
        for name in partials(storage, folder)
        if (storage / folder / name).is_file()
    ]


def stored_files(storage: Path) -> dict[str, dict[str, object]]:
    """Every stored file's info; asserts each one's data is whole and matches it."""
    found: dict[str, dict[str, object]] = {}
    for path in sorted((storage / "files").glob("*/*")):
        # A stored file is its whole data followed by its info, nothing less.
        with open(path, "rb") as handle:
            info = read_trailer(handle)
            assert info is not None, f"half a file: {path}"
            data = handle.read(info.size)
        assert len(data) == info.size, path
        assert hashlib.sha256(data).hexdigest() == info.sha256, path
        found[path.name] = asdict(info)
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- kill -9 in the middle of a large upload


@dataclass
class Earlier:
    slot: Slot
    data: bytes
    digest: str


def upload_a_few(client: XmppClient, service: HttpUpload) -> list[Earlier]:
    """Upload a few files of different sizes; remember bytes and 201 digests."""
    earlier = []
    for name, size in [("one.bin", 1), ("note.txt", 70_000), ("photo.jpg", 3 * MIB)]:
        data = os.urandom(size)
        slot = client.request_slot(service.component_jid, name, size, OCTETS)
        response = put(slot, data)
        assert response.status == 201, response
        assert response.headers["repr-digest"] == digest_of(data)
        earlier.append(Earlier(slot, data, response.headers["repr-digest"]))
    return earlier


def kill_mid_upload(client: XmppClient, service: HttpUpload, block: bytes) -> Slot:
    """Start a BIG upload, wait until part of it is on disk, then kill -9 it."""
    slot = client.request_slot(service.component_jid, "interrupted.bin", BIG, OCTETS)
    upload = RawPut(slot, BIG)
    while upload.sent < SENT_BEFORE_KILL:
        upload.send(block)
    wait_until(
        lambda: any(
            size >= ON_DISK_BEFORE_KILL for size in partial_sizes(service.storage_path)
        ),
        timeout=15,
        what=f"{ON_DISK_BEFORE_KILL} bytes of the upload on disk",
    )
    # Certainly in flight: part on disk, far from all of it, and nothing served yet.
    assert max(partial_sizes(service.storage_path)) < BIG
    assert download(slot.get_url)[0] == 404
    service.kill()
    upload.close()
    return slot


def test_kill_9_mid_upload_keeps_earlier_files_and_serves_no_partial(
    make_spare_service: Callable[..., HttpUpload], connect: Callable[..., XmppClient]
) -> None:
    """After kill -9 mid-upload and a restart, earlier files are served unchanged
    (same bytes, same digest), the interrupted one is not served (its bytes are
    kept as the slot's partial upload, to resume: #12), no temporary file is
    left, and the interrupted slot takes a whole PUT again."""
    service = make_spare_service(max_file_size=BIG + MIB)
    service.start()
    client = connect()
    earlier = upload_a_few(client, service)
    block = os.urandom(MIB)
    slot = kill_mid_upload(client, service, block)
    assert partials(service.storage_path), "the killed upload left no partial at all?"

    service.start()
    # Start-up clears what the crash left in tmp/ (in a thread: give it a
    # moment); the slot's partial upload stays, for the slot to resume.
    wait_until(
        lambda: not partials(service.storage_path, "tmp"),
        timeout=5,
        what="an empty tmp/ after start-up",
    )
    assert partials(service.storage_path) == [file_id(slot)]

    for item in earlier:
        status, headers, body = download(item.slot.get_url)
        assert status == 200
        assert body == item.data
        assert headers["Repr-Digest"] == item.digest
    assert download(slot.get_url)[0] == 404
    stored = stored_files(service.storage_path)
    assert set(stored) == {file_id(item.slot) for item in earlier}

    # The interrupted slot is still unused: a whole PUT of it is stored now.
    upload = RawPut(slot, BIG)
    sha256 = hashlib.sha256()
    for _ in range(BIG // MIB):
        upload.send(block)
        sha256.update(block)
    response = upload.response()
    upload.close()
    expected = "sha-256=:" + base64.b64encode(sha256.digest()).decode() + ":"
    assert response is not None and response.status == 201, response
    assert response.headers["repr-digest"] == expected
    assert get_digest(slot.get_url) == (200, expected, BIG, expected)
    assert partials(service.storage_path) == []  # the stored file replaced it


# ---- the XMPP server restarted during traffic


@dataclass
class Outcome:
    session: int  # which of the client's sessions (1, 2, ...) sent it
    sent: float
    answered: float
    result: str  # "slot", "error <type>/<condition>: <text>", "disconnected", ...


@dataclass
class SlotTraffic:
    """A client that keeps requesting slots, reconnecting when its stream drops."""

    port: int
    service: str
    jid: str = "alice@localhost"
    password: str = "alice-password-for-tests"
    outcomes: list[Outcome] = field(default_factory=list)
    sessions: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if not port_open(self.port):
                    time.sleep(0.02)
                    continue
                session = XmppClient(
                    self.jid, self.password, port=self.port, timeout=REQUEST_TIMEOUT
                )
                try:
                    session.connect()
                except Exception as exc:  # the server may be going down again
                    self.problems.append(f"connect: {exc!r}")
                    session.close()
                    time.sleep(0.1)
                    continue
                try:
                    self.requests(session, len(self.sessions) + 1)
                finally:
                    session.close()
        except Exception as exc:  # pragma: no cover - reported by the test
            self.problems.append(f"traffic thread died: {exc!r}")
            raise

    def requests(self, session: XmppClient, number: int) -> None:
        with self.lock:
            self.sessions.append(time.monotonic())
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                session.request_slot(self.service, "traffic.txt", 10, "text/plain")
                result = "slot"
            except SlotRefusedError as exc:
                result = f"error {exc.error_type}/{exc.condition}: {exc.text}"
            except DisconnectedError:
                result = "disconnected"
            except (XmppClientError, TimeoutError) as exc:
                result = f"no answer: {exc!r}"
            with self.lock:
                self.outcomes.append(Outcome(number, sent, time.monotonic(), result))
            if result == "disconnected" or not session.is_connected:
                return
            time.sleep(0.01)

    def slots_since(self, moment: float) -> int:
        with self.lock:
            return sum(
                1 for o in self.outcomes if o.sent >= moment and o.result == "slot"
            )


def test_component_is_back_within_seconds_of_prosody_and_every_request_answered(
    prosody: Prosody, httpupload: HttpUpload
) -> None:
    """Prosody restarts while a client keeps requesting slots: the component is
    back within RECONNECT_BOUND s of Prosody, and every request the client sends
    after reconnecting gets a slot or an error, never silence."""
    traffic = SlotTraffic(prosody.c2s_port, httpupload.component_jid)
    thread = threading.Thread(target=traffic.run, name="slot-traffic", daemon=True)
    thread.start()
    try:
        wait_until(lambda: traffic.slots_since(0) >= 5, 15, "slots before the restart")
        offset = httpupload.log_offset()
        stopping = time.monotonic()
        prosody.stop()
        down = time.monotonic()
        prosody.start()
        up = time.monotonic()  # both ports accept connections (polled every 50 ms)
        wait_until(
            lambda: httpupload.count(ONLINE_PATTERN, since=offset) >= 1,
            30,
            "the component online again",
        )
        online = time.monotonic()
        wait_until(
            lambda: traffic.slots_since(online) >= 20,
            15,
            "slots after the restart",
        )
    finally:
        traffic.stopping.set()
        thread.join(timeout=30)
    assert not thread.is_alive()

    back_after = online - up
    assert back_after <= RECONNECT_BOUND, (
        f"component back {back_after:.2f} s after Prosody (down {up - stopping:.2f} s)"
    )
    # "After reconnecting": on sessions opened once the old server was gone.
    reconnected = [n for n, opened in enumerate(traffic.sessions, 1) if opened > down]
    assert reconnected, f"the client never reconnected: {traffic.problems}"
    after = [o for o in traffic.outcomes if o.session >= reconnected[0]]
    assert after
    silent = [
        o for o in after if o.result != "slot" and not o.result.startswith("error")
    ]
    assert not silent, silent
    # Once the component is back, every request gets a slot.
    late = [o for o in after if o.sent >= online]
    assert late and all(o.result == "slot" for o in late), late
    slowest = max(o.answered - o.sent for o in after)
    assert slowest < REQUEST_TIMEOUT
    print(  # shown with -s: the numbers behind the bounds
        f"prosody stopped in {down - stopping:.2f} s, started in {up - down:.2f} s; "
        f"component back {back_after:.2f} s later; "
        f"{len(after)} requests after reconnecting, "
        f"{sum(o.result != 'slot' for o in after)} errors "
        f"{sorted({o.result for o in after} - {'slot'})}; slowest {slowest:.3f} s"
    )


# ---- SIGTERM during an upload


@dataclass
class Terminated:
    service: HttpUpload
    slot: Slot
    data: bytes
    #: What the client got for its PUT (None: the connection closed without one).
    response: Response | None
    exited_after: float
    #: GET after the restart: status, Repr-Digest, length, digest of the body.
    got: tuple[int, str | None, int, str]


def sigterm_mid_upload(
    make_spare_service: Callable[..., HttpUpload], client: XmppClient
) -> Terminated:
    """SIGTERM the service with an upload in flight whose client keeps sending;
    wait for the exit, restart on the same storage and GET the file."""
    service = make_spare_service()
    service.start()
    data = os.urandom(24 * MIB)
    slot = client.request_slot(service.component_jid, "during-term.bin", len(data))
    upload = RawPut(slot, len(data))
    upload.send(data[: 8 * MIB])
    wait_until(
        lambda: any(size >= 4 * MIB for size in partial_sizes(service.storage_path)),
        timeout=15,
        what="part of the upload on disk",
    )
    process = service.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    def finish_sending() -> Response | None:
        # A draining service may take the rest; a stopping one drops us.
        try:
            upload.send(data[upload.sent :])
        except OSError:
            pass
        return upload.response()

    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(finish_sending)
        try:
            process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_TIMEOUT} s after SIGTERM")
        exited_after = time.monotonic() - signalled
        response = answer.result(timeout=30)
    upload.close()
    # twistd re-raises the signal it stopped for once it has shut down cleanly:
    # systemd counts death by SIGTERM as a clean stop, as it does exit status 0.
    assert service.stop() in (0, -signal.SIGTERM), service.log_text()
    assert "Traceback" not in service.log_text()
    service.start()
    got = get_digest(slot.get_url)
    print(  # shown with -s
        f"exited {exited_after:.2f} s after SIGTERM; PUT answered "
        f"{None if response is None else response.status}; GET after restart "
        f"{got[0]}; left in tmp/: {partials(service.storage_path)}"
    )
    return Terminated(service, slot, data, response, exited_after, got)


def test_sigterm_during_upload_exits_and_leaves_nothing_half_written(
    make_spare_service: Callable[..., HttpUpload], connect: Callable[..., XmppClient]
) -> None:
    """SIGTERM mid-upload: the process exits; after a restart the file is either
    not served or served whole and correct, and no stored file is partial."""
    run = sigterm_mid_upload(make_spare_service, connect())
    whole = (200, digest_of(run.data), len(run.data), digest_of(run.data))
    if run.response is not None and run.response.status == 201:
        assert run.response.headers["repr-digest"] == digest_of(run.data)
        assert run.got == whole
    else:
        assert run.got[0] == 404 or run.got == whole, run.got
    stored = stored_files(run.service.storage_path)
    assert set(stored) <= {file_id(run.slot)}


def test_sigterm_lets_an_upload_in_flight_finish_with_its_201(
    make_spare_service: Callable[..., HttpUpload], connect: Callable[..., XmppClient]
) -> None:
    """An upload whose body arrives within the grace period is stored and its
    client gets the 201 with the digest before the process exits."""
    run = sigterm_mid_upload(make_spare_service, connect())
    assert run.response is not None, "no response at all to the PUT"
    assert run.response.status == 201, run.response
    assert run.response.headers["repr-digest"] == digest_of(run.data)
    assert run.got == (200, digest_of(run.data), len(run.data), digest_of(run.data))
