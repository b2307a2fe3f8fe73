"""Hostile input: hypothesis drives the IQ handler and the HTTP layer.

Every input gets a slot, a stored file or one of the documented errors; no
exception reaches the log; nothing outside the storage folder is touched.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from fuzz_site import TEST_KEY
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.words.xish import domish
from webserver import raw_exchange
from wokkel import disco, generic
from wokkel.test import helpers

from httpupload.policy import SlotPolicy
from httpupload.slots import FILE_ID_RE, SlotSigner
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.stanzas import NAMESPACES, NS_UPLOAD

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
DOCUMENTED_CONDITIONS = {"bad-request", "not-acceptable", "forbidden"}
# Every status the HTTP side documents (docs/design.md).
ANSWERS = {200, 201, 204, 206, 304, 400, 403, 404, 405, 409, 411, 416, 429, 503, 507}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# XML 1.0 characters only: anything else cannot arrive over an XMPP stream.
xml_text = st.text(
    st.characters(
        exclude_categories=["Cs"],
        exclude_characters="\x00\ufffe\uffff",
        max_codepoint=0x10FFFF,
    ).filter(lambda c: c in "\t\n\r" or ord(c) >= 0x20),
    max_size=300,
)
sizes = st.one_of(
    st.integers(-10, 10**12).map(str),
    st.sampled_from(["", " 5 ", "+7", "0x10", "1e3", "٣", "99999999999999999999999"]),
    xml_text,
)


def error_condition(reply: domish.Element) -> str:
    return next(
        c.name
        for c in reply.error.elements()
        if c.uri == NS_STANZAS and c.name != "text"
    )


@given(
    namespace=st.sampled_from(NAMESPACES),
    filename=st.one_of(st.none(), xml_text),
    size=st.one_of(st.none(), sizes),
    content_type=st.one_of(st.none(), xml_text),
    sender=st.sampled_from(["romeo@montague.tld/x", "eve@evil.tld/y", "montague.tld"]),
)
@FUZZ
def test_slot_requests(
    namespace: str,
    filename: str | None,
    size: str | None,
    content_type: str | None,
    sender: str,
) -> None:
    """Any request: a usable slot or a documented error, and nothing logged as error."""
    clock = Clock()
    signer = SlotSigner(b"k" * 32, clock)
    manager = helpers.TestableStreamManager(reactor=clock)
    for handler in (
        generic.FallbackHandler(),
        disco.DiscoHandler(),
        UploadHandler(
            SlotPolicy(10**9, ("montague.tld",)),
            signer,
            "https://u/",
            "https://u/",
            300,
        ),
    ):
        handler.setHandlerParent(manager)
    request = domish.Element((namespace, "request"))
    fields = {"filename": filename, "size": size, "content-type": content_type}
    for name, value in fields.items():
        if value is None:
            continue
        if namespace == NS_UPLOAD:
            request[name] = value
        else:
            request.addElement(name, content=value)
    iq = domish.Element((None, "iq"))
    iq["type"], iq["id"], iq["from"], iq["to"] = "get", "f1", sender, "u"
    iq.addChild(request)
    with capturedLogs() as events:
        manager.stub.send(iq)
    assert not [e for e in events if e["log_level"].name in ("error", "critical")]
    (reply,) = manager.stub.output
    if reply["type"] == "result":
        slot = reply.slot
        put = slot.put["url"] if namespace == NS_UPLOAD else str(slot.put)
        file_id, name = put.split("?")[0].split("/")[-2:]
        assert FILE_ID_RE.fullmatch(file_id)
        token = put.split("?token=")[1]
        assert signer.decode(token).size > 0
    else:
        assert error_condition(reply) in DOCUMENTED_CONDITIONS
        assert reply.request is not None  # the request is echoed


class WallClock:
    """The real time, for slots the site in the other process checks by its clock."""

    def seconds(self) -> float:
        return time.time()


@dataclass
class FuzzSite:
    port: int
    storage: Path
    log: Path
    signer: SlotSigner

    def mint(self, name: str, size: int, content_type: str | None) -> tuple[str, str]:
        slot, token = self.signer.mint(name, size, content_type, "r@m.tld", 300)
        return slot.path, token


@pytest.fixture(scope="module")
def fuzz_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzSite]:
    """The site in its own process: these tests block on sockets (the point:
    the wire format as the kernel delivers it, half-closes included)."""
    base = tmp_path_factory.mktemp("fuzz")
    log = base / "site.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("fuzz_site.py")),
                str(base / "store"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(rb"PORT (\d+)", log.read_bytes())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "fuzz site did not start"
            time.sleep(0.05)
        # Slots are checked against the site's real clock.
        yield FuzzSite(
            int(match.group(1)),
            base / "store",
            log,
            SlotSigner(TEST_KEY, cast(IReactorTime, WallClock())),
        )
    finally:
        process.terminate()
        process.wait(10)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Unhandled" not in text, text[-3000:]


def exchange(port: int, payload: bytes) -> bytes:
    """Send a request, half-close, and read whatever comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before the body is sent
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


header_value = st.binary(max_size=80).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip()
)
hostile_numbers = st.sampled_from(
    [b"9" * 5000, b"-1", b"+5", b"1,2", b"5, 5", b"0x10", b"1" * 20, b"\xd9\xa3"]
)
hostile_ranges = st.sampled_from(
    [
        b"bytes=0-" + b"9" * 5000,
        b"bytes=" + b"9" * 5000 + b"-",
        b"bytes=-" + b"9" * 5000,
        b"bytes=" + b"0" * 5000 + b"1-2",
    ]
)
path_bytes = st.binary(min_size=0, max_size=120).map(
    lambda b: b"/" + b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")
)


@pytest.mark.enable_socket
@given(data=st.data())
@FUZZ
def test_http_requests(fuzz_site: FuzzSite, data: st.DataObject) -> None:
    """Arbitrary paths, methods, headers, numbers and bodies: a documented status."""
    path, token = fuzz_site.mint(
        data.draw(st.sampled_from(["a.txt", "très.png", "x"])),
        data.draw(st.integers(1, 2000)),
        data.draw(st.sampled_from([None, "image/png", "text/plain"])),
    )
    method = data.draw(
        st.one_of(
            st.sampled_from([b"PUT", b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"POST"]),
            # Methods nobody defined: 405.
            st.from_regex(rb"[A-Z0-9]{1,40}", fullmatch=True),
        )
    )
    target = data.draw(
        st.one_of(
            path_bytes,
            st.just(f"/{path}".encode()),
            st.just(f"/{path}?token={token}".encode()),
        )
    )
    body = data.draw(st.binary(max_size=2100))
    head = [method + b" " + target + b" HTTP/1.1", b"Host: x", b"Connection: close"]
    authorization = st.one_of(header_value, st.just(f"Bearer {token}".encode()))
    for name, values in (
        (b"Authorization", authorization),
        (b"Content-Type", st.one_of(header_value, st.just(b"image/png"))),
        (b"Range", st.one_of(header_value, hostile_ranges)),
        (b"Expect", st.just(b"100-continue")),
    ):
        if data.draw(st.booleans()):
            head.append(name + b": " + data.draw(values))
    length = data.draw(st.one_of(st.just(len(body)), st.integers(0, 3000)))
    if data.draw(st.booleans()):
        head.append(b"Content-Length: %d" % length)
        body = body[:length]
    else:
        # Numbers no length is: a 400 naming Content-Length, never a drop.
        head.append(b"Content-Length: " + data.draw(hostile_numbers))
    outside = fuzz_site.storage.parent
    before = set(outside.rglob("*"))
    answer = exchange(fuzz_site.port, b"\r\n".join(head) + b"\r\n\r\n" + body)
    if answer.startswith(b"HTTP/1.1 100 "):
        answer = answer.split(b"\r\n\r\n", 1)[1]
    if answer:  # a body shorter than announced may end without an answer
        status = int(answer.split(b" ", 2)[1])
        event(f"status {status}")
        assert status in ANSWERS, answer[:300]
    created = set(outside.rglob("*")) - before
    assert all(fuzz_site.storage in p.parents for p in created), created
    for stored in (fuzz_site.storage / "files").glob("*/*"):
        assert FILE_ID_RE.fullmatch(stored.name)


@pytest.mark.enable_socket
def test_hostile_numbers_and_methods_over_sockets(fuzz_site: FuzzSite) -> None:
    """Huge Range and Content-Length numbers and invented methods: each answered."""

    def answer(payload: bytes) -> bytes:
        return raw_exchange(fuzz_site.port, payload, False)

    path, token = fuzz_site.mint("n.txt", 5, None)
    stored = answer(
        f"PUT /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 5\r\n\r\nhello".encode()
    )
    assert stored.startswith(b"HTTP/1.1 201 "), stored[:300]
    get = f"GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    huge = b"9" * 5000
    for value, expected in (
        (b"bytes=" + huge + b"-", b"416"),
        (b"bytes=0-" + huge, b"206"),
        (b"bytes=-" + huge, b"206"),
    ):
        got = answer(get + b"Range: " + value + b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 " + expected + b" "), got[:300]
    got = answer(
        b"PUT /" + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: " + huge + b"\r\n\r\nhello"
    )
    assert got.startswith(b"HTTP/1.1 400 "), got[:300]
    assert b"Content-Length" in got
    flood = b"".join(
        b"ZZ%dQ%s / HTTP/1.1\r\nHost: x\r\n\r\n" % (i, b"Q" * 100) for i in range(300)
    )
    got = answer(flood + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.count(b"HTTP/1.1 405 ") == 300
    assert got.count(b"HTTP/1.1 404 ") == 1
