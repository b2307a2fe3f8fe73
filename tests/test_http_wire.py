"""The HTTP wire, in memory: what a hostile or unusual client sends, byte for byte.

Our ``UploadSite`` is driven by ``httpupload.testing`` over ``twisted.test.iosim``
on a ``MemoryReactorClock``, with memory storage, so a whole PUT and GET
happen inside one call, with no real reactor.

(Over 400 lines on purpose: one suite for every rule of the wire, with the
hypothesis properties of the parsers those rules rest on.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs, formatEvent
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from httpupload.metrics import Metrics
from httpupload.slots import url_path
from httpupload.testing import Connection, Harness, make_harness
from httpupload.web.addresses import canonical_address, parse_networks
from httpupload.web.ranges import ByteRange, Unsatisfiable, parse_range
from httpupload.web.site import log_safe
from httpupload.web.wire import content_length, head_problem

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


def mint(
    wire: Harness, name: str = "a.txt", size: int = 5, content_type: str | None = None
) -> tuple[str, str]:
    """A slot's path (``/<id>/<name>``) and its token."""
    minted = wire.mint(name, size, content_type)
    return minted.path, minted.token


def put(
    wire: Harness, target: bytes, token: str, body: bytes, *extra: bytes
) -> Connection:
    """A PUT of ``body`` to ``target`` with the token, on a new connection."""
    head = [
        b"PUT " + target + b" HTTP/1.1",
        b"Host: upload.example",
        b"Authorization: Bearer " + token.encode(),
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return wire.send(b"\r\n".join(head) + b"\r\n\r\n" + body)


@pytest.fixture
def wire() -> Harness:
    """Our UploadSite, memory storage, a clock; clients come from 192.0.2.7."""
    h = make_harness()
    h.peer = PEER
    return h


def status(client: Connection) -> int:
    """The status of the first response the client got (0: none)."""
    return client.status


def head_of(client: Connection) -> bytes:
    return client.head


def body_of(client: Connection) -> bytes:
    return client.body


def stored(wire: Harness) -> list[str]:
    """The ids of stored files."""
    return list(wire.storage.files)


# -- numbers from clients ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"5" * 5000,
        b"-5",
        b"+5",
        b"1,2",
        b"5, 5",
        b"0x5",
        b"5 5",
        b"",
        b"\xd9\xa3",  # an Arabic-Indic digit
        b"1" * 20,
    ],
)
def test_bad_content_length_gets_400_with_a_reason(wire: Harness, value: bytes) -> None:
    """A Content-Length that is not 1-19 ASCII digits: 400 with a reason, closed."""
    path, token = mint(wire, size=5)
    with capturedLogs() as events:
        client = wire.send(
            b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: " + value + b"\r\n\r\nhello"
        )
    assert status(client) == 400, client.received
    assert b"Content-Length" in body_of(client)
    assert client.closed
    assert stored(wire) == []
    assert not [e for e in events if e.get("log_failure")]


@pytest.mark.parametrize(
    "framing",
    [
        [b"Content-Length: 5", b"Content-Length: 6"],
        [b"Content-Length: 5", b"Content-Length: 5"],
        [b"Content-Length: 5", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: chunked", b"Content-Length: 5"],
        [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
        [b"Transfer-Encoding: gzip, chunked"],
    ],
)
def test_conflicting_framing_gets_400_with_a_reason(
    wire: Harness, framing: list[bytes]
) -> None:
    """Several lengths, or a length beside a transfer coding: 400 naming it, closed."""
    client = wire.send(
        b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(framing) + b"\r\n\r\nhello"
    )
    assert status(client) == 400, client.received
    assert b"given" in body_of(client) or b"chunked" in body_of(client)
    assert client.closed


def test_a_valid_content_length_still_works(wire: Harness) -> None:
    """A length of leading zeros and surrounding spaces is still the length."""
    path, token = mint(wire, size=5)
    client = wire.send(
        b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length:  0005 \r\n\r\nhello"
    )
    assert status(client) == 201, client.received


def test_huge_range_is_answered(wire: Harness) -> None:
    """Range numbers of 5,000 digits: 416 for a start, the whole file for an end."""
    path, token = mint(wire, size=5)
    assert status(put(wire, path.encode(), token, b"hello")) == 201
    huge = b"9" * 5000
    cases = {
        b"bytes=" + huge + b"-": 416,
        b"bytes=0-" + huge: 206,
        b"bytes=-" + huge: 206,
        b"bytes=" + huge + b"-1": 200,
    }
    for value, expected in cases.items():
        with capturedLogs() as events:
            client = wire.send(
                b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Range: " + value + b"\r\n\r\n"
            )
        assert status(client) == expected, (value[:20], client.received[:200])
        assert not [e for e in events if e.get("log_failure")]
        if expected != 416:
            assert body_of(client) == b"hello"


# -- RFC conformance ------------------------------------------------------------


@pytest.mark.parametrize("scheme", [b"http", b"HTTPS"])
def test_absolute_form_put_and_get(wire: Harness, scheme: bytes) -> None:
    """PUT and GET to http://host/<id>/<name> work as they do in origin form."""
    path, token = mint(wire, size=5)
    target = scheme + b"://upload.example:8443" + path.encode()
    client = put(wire, target, token, b"hello")
    assert status(client) == 201, client.received
    client = wire.send(b"GET " + target + b" HTTP/1.1\r\nHost: other\r\n\r\n")
    assert status(client) == 200, client.received
    assert body_of(client) == b"hello"


def test_absolute_form_with_a_query_token(wire: Harness) -> None:
    """An absolute-form PUT carrying its token in the query is accepted."""
    path, token = mint(wire, size=5)
    client = wire.send(
        b"PUT http://h" + path.encode() + b"?token=" + token.encode() + b" HTTP/1.1\r\n"
        b"Host: h\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert status(client) == 201, client.received


def test_put_with_content_range_is_refused_before_storing(wire: Harness) -> None:
    """A PUT with Content-Range gets 400 (RFC 9110 §14.5) and stores nothing."""
    path, token = mint(wire, size=5)
    client = put(wire, path.encode(), token, b"hello", b"Content-Range: bytes 0-4/5")
    assert status(client) == 400, client.received
    assert b"Content-Range" in body_of(client)
    assert stored(wire) == [] and wire.storage.pending == set()
    # The slot is untouched: a whole PUT after it is stored.
    assert status(put(wire, path.encode(), token, b"hello")) == 201


@pytest.mark.parametrize(
    "hosts",
    [[], [b"Host: a", b"Host: b"], [b"Host: a", b"Host: a"], [b"Host: a b"]],
)
def test_http11_needs_exactly_one_valid_host(wire: Harness, hosts: list[bytes]) -> None:
    """HTTP/1.1 without Host, with several, or with a bad value: 400, closed."""
    client = wire.send(b"\r\n".join([b"GET /x HTTP/1.1", *hosts]) + b"\r\n\r\n")
    assert status(client) == 400, client.received
    assert b"Host" in body_of(client)
    assert client.closed
    # The refusal carries the headers every response carries.
    assert b"\r\nAccess-Control-Allow-Origin: *" in head_of(client)


def test_http10_without_host_is_served(wire: Harness) -> None:
    """HTTP/1.0 needs no Host; an empty Host or one with a port is fine too."""
    client = wire.send(b"GET /x HTTP/1.0\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.0 404 ")
    for host in (b"", b"[::1]:8080", b"upload.example:443"):
        client = wire.send(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert status(client) == 404, (host, client.received)


def test_put_without_host_is_refused_before_storing(wire: Harness) -> None:
    """A PUT lacking Host gets 400 and its slot stays usable."""
    path, token = mint(wire, size=5)
    client = wire.send(
        b"PUT " + path.encode() + b" HTTP/1.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    assert status(client) == 400
    assert stored(wire) == []
    assert status(put(wire, path.encode(), token, b"hello")) == 201


def test_a_refused_head_sends_no_100_continue(wire: Harness) -> None:
    """A client waiting for 100 Continue on a refused head gets the 400 instead."""
    path, token = mint(wire, size=5)
    client = wire.send(
        b"PUT " + path.encode() + b" HTTP/1.1\r\nExpect: 100-continue\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    assert status(client) == 400, client.received
    assert b"100 Continue" not in client.received
    assert client.closed


def test_no_server_version_is_sent(wire: Harness) -> None:
    """No response names the server software or its version."""
    path, token = mint(wire, size=5)
    answers = [
        put(wire, path.encode(), token, b"hello"),
        wire.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        wire.send(b"OPTIONS /x HTTP/1.1\r\nHost: x\r\n\r\n"),
        wire.send(b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n"),
        wire.send(b"GET /x HTTP/1.1\r\n\r\n"),
    ]
    for client in answers:
        assert status(client), client.received
        assert b"\r\nserver:" not in head_of(client).lower(), head_of(client)
        assert b"Twisted" not in client.received


def test_large_bodies_of_other_methods_are_not_read(wire: Harness) -> None:
    """A GET announcing a large or chunked body is answered at once and closed."""
    for framing in (b"Content-Length: 100000000", b"Transfer-Encoding: chunked"):
        client = wire.send(b"POST /x HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        assert status(client) == 405, client.received
        assert client.closed


def test_small_bodies_of_other_methods_are_dropped(wire: Harness) -> None:
    """A small body on a GET is read and dropped; the connection goes on."""
    client = wire.send(
        b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert client.received.count(b"HTTP/1.1 404 ") == 2, client.received
    assert not client.closed


# -- metrics ---------------------------------------------------------------------


def series(metrics: Metrics) -> int:
    """How many samples the registry holds."""
    return sum(len(m.samples) for m in metrics.registry.collect())


def test_invented_methods_add_no_series(wire: Harness) -> None:
    """3,000 distinct invented methods leave the number of series as one did."""
    wire.send(b"ZZ0 /x HTTP/1.1\r\nHost: x\r\n\r\n")
    before = series(wire.metrics)
    requests = b"".join(
        b"ZZ%dQ%s /x HTTP/1.1\r\nHost: x\r\n\r\n" % (i, b"Q" * 200) for i in range(3000)
    )
    client = wire.send(requests)
    assert client.received.count(b"HTTP/1.1 405 ") == 3000
    assert series(wire.metrics) == before
    value = wire.metrics.registry.get_sample_value(
        "httpupload_http_responses_total", {"method": "other", "status": "405"}
    )
    assert value == 3001


def test_method_labels_are_the_served_ones(wire: Harness) -> None:
    """GET, HEAD, PUT and OPTIONS keep their names; lower case is not GET."""
    for method in (b"GET", b"HEAD", b"OPTIONS", b"get"):
        wire.send(method + b" /x HTTP/1.1\r\nHost: x\r\n\r\n")
    labels = {
        s.labels["method"]
        for m in wire.metrics.registry.collect()
        for s in m.samples
        if s.name == "httpupload_http_responses_total"
    }
    assert labels == {"GET", "HEAD", "OPTIONS", "other"}


# -- logs ---------------------------------------------------------------------------


def access_lines(events: Sequence[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events if " - - " in (formatEvent(e) or "")]


@pytest.fixture
def logged_wire(wire: Harness) -> Any:
    """The wire with the access log on (the site started, as a port does)."""
    wire.start()
    yield wire
    wire.stop()


def test_access_log_escapes_control_characters(logged_wire: Harness) -> None:
    """Terminal escapes, C1 and bidi bytes in User-Agent reach the log escaped."""
    agent = b'\x1b[2J\x1b]0;pwned\x07 "q" \\ \x7f\x9b\xc2\x85\xe2\x80\xae end'
    with capturedLogs() as events:
        logged_wire.send(
            b"GET /x HTTP/1.1\r\nHost: x\r\nUser-Agent: " + agent + b"\r\n\r\n"
        )
    (line,) = access_lines(events)
    assert all(0x20 <= ord(c) < 0x7F or c == "…" for c in line), repr(line)
    assert '\\x1b[2J\\x1b]0;pwned\\x07 \\"q\\" \\\\ \\x7f\\x9b\\xc2\\x85' in line
    assert "\\xe2\\x80\\xae end" in line


def test_access_log_redacts_absolute_form_and_queries(logged_wire: Harness) -> None:
    """Neither the file name, the id past six characters nor a token reaches the log."""
    path, token = mint(logged_wire, "secret-name.txt", 5)
    file_id = path.split("/")[1]
    with capturedLogs() as events:
        logged_wire.send(
            b"PUT http://upload.example"
            + path.encode()
            + b"?token="
            + token.encode()
            + b" HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        )
        logged_wire.send(
            b"GET http://upload.example/x/y?token="
            + token.encode()
            + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        )
    lines = access_lines(events)
    assert len(lines) == 2, lines
    assert f'"PUT /{file_id[:6]}…/<name> HTTP/1.1" 201' in lines[0]
    assert '"GET /<other> HTTP/1.1" 404' in lines[1]
    text = "\n".join(formatEvent(e) or "" for e in events)
    for secret in ("secret", file_id[6:], token[:20], "upload.example"):
        assert secret not in text


# -- failures while answering ------------------------------------------------------


class _Raising(Resource):
    isLeaf = True

    def __init__(self, after_head: bool) -> None:
        super().__init__()
        self.after_head = after_head

    def render(self, request: Any) -> bytes:
        request.setHeader(b"X-Half", b"set")
        if self.after_head:
            request.setHeader(b"Content-Length", b"100")
            request.write(b"partial")
        raise RuntimeError("boom")


def test_a_failure_before_the_head_is_a_plain_500(wire: Harness) -> None:
    """An exception in rendering: a text 500 with the common headers, not the rest."""
    wire.site.resource = _Raising(after_head=False)
    with capturedLogs():
        client = wire.send(
            b"GET /x HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert client.received.count(b"HTTP/1.1 500 ") == 2, client.received
    head = head_of(client)
    assert b"text/plain" in head and b"Access-Control-Allow-Origin: *" in head
    assert b"X-Half" not in head


def test_a_failure_after_the_head_cuts_the_connection(wire: Harness) -> None:
    """Once the head is out, a failure aborts the connection: no page appended."""
    wire.site.resource = _Raising(after_head=True)
    with capturedLogs():
        client = wire.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 200 ")
    assert body_of(client) == b"partial"
    assert client.closed


def test_a_failing_access_log_leaves_no_request_hanging(wire: Harness) -> None:
    """If counting a response raises, the request still ends and the next is served."""

    class Broken(Metrics):
        def http_response(self, request: Any) -> None:
            raise RuntimeError("broken metrics")

    wire.site.metrics = Broken()
    with capturedLogs() as events:
        client = wire.send(
            b"OPTIONS /x HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert b"HTTP/1.1 204 " in client.received
    assert b"HTTP/1.1 404 " in client.received
    assert any(e.get("log_failure") for e in events)


# -- hypothesis: arbitrary heads -----------------------------------------------------

WIRE_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
line_bytes = st.binary(max_size=60).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
)
framing_names = st.sampled_from(
    [
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"Host",
        b"Range",
        b"Content-Range",
        b"User-Agent",
        b"X-Forwarded-For",
        b"Expect",
    ]
)
HOSTILE_NUMBERS = [b"9" * 5000, b"0-" + b"9" * 5000, b"-1", b"+5", b"1,2", b"5, 5"]
numbers = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers(-(10**30), 10**30).map(lambda n: str(n).encode()),
    st.integers(1, 6000).map(lambda n: b"9" * n),
    line_bytes,
)


def stored_path(wire: Harness) -> bytes:
    """The path of a 5-byte file on the wire, stored on first use."""
    for info, _ in wire.storage.files.values():
        return b"/" + url_path(info.file_id, info.filename).encode()
    path, token = mint(wire, size=5)
    assert status(put(wire, path.encode(), token, b"hello")) == 201
    return path.encode()


@given(
    method=st.one_of(
        st.sampled_from([b"GET", b"PUT", b"HEAD", b"OPTIONS"]), line_bytes
    ),
    target=st.one_of(
        st.sampled_from([b"/x", b"http://h/a/b", b"<file>", b"http://h<file>"]),
        line_bytes,
    ),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b""]),
    headers=st.lists(st.tuples(framing_names, numbers), max_size=5),
    body=st.binary(max_size=40),
)
@example(
    method=b"GET",
    target=b"/x",
    version=b"HTTP/1.1",
    headers=[(b"Content-Length", b"9" * 5000)],
    body=b"",
)
@example(
    method=b"GET",
    target=b"<file>",
    version=b"HTTP/1.1",
    headers=[(b"Host", b"h"), (b"Range", b"bytes=0-" + b"9" * 5000)],
    body=b"",
)
@WIRE_FUZZ
def test_any_head_gets_an_answer(
    wire: Harness,
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    """Any head and numbers: an answer or a close, never an exception or a hang."""
    target = target.replace(b"<file>", stored_path(wire))
    head = [method + b" " + target + b" " + version]
    head += [name + b": " + value for name, value in headers]
    with capturedLogs() as events:
        client = wire.send(b"\r\n".join(head) + b"\r\n\r\n" + body, close=True)
    assert client.closed
    assert client.received == b"" or client.received.startswith(
        (b"HTTP/1.1 ", b"HTTP/1.0 ")
    )
    failures = [e for e in events if e.get("log_failure")]
    assert not failures, [formatEvent(e) for e in failures]
    # Nothing the client sent becomes a metric label.
    assert series(wire.metrics) < 200


# -- hypothesis: the pure parsers ----------------------------------------------------

PURE = settings(max_examples=400, deadline=None)
range_specs = st.one_of(
    st.binary(max_size=60),
    st.builds(
        lambda a, b: b"bytes=" + a + b"-" + b,
        st.one_of(st.just(b""), st.from_regex(rb"[0-9]{1,60}", fullmatch=True)),
        st.one_of(st.just(b""), st.from_regex(rb"[0-9]{1,60}", fullmatch=True)),
    ),
)


def exact_range(header: bytes, size: int) -> tuple[int, int] | str | None:
    """RFC 9110 §14.1.2 with exact integers, for headers of short numbers."""
    match = re.fullmatch(rb"bytes=([0-9]*)-([0-9]*)", header.strip())
    if match is None or size <= 0:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= size:
            return "416"
        return start, min(int(last), size - 1) if last else size - 1
    if not last:
        return None
    if int(last) == 0:
        return "416"
    return max(0, size - int(last)), size - 1


@given(header=range_specs, size=st.integers(0, 10**15))
@PURE
def test_parse_range_is_exact_and_never_raises(header: bytes, size: int) -> None:
    """Any Range: None, a range in the file or Unsatisfiable, as RFC 9110 says."""
    try:
        found = parse_range(header, size)
    except Unsatisfiable:
        answer: tuple[int, int] | str | None = "416"
    else:
        answer = None if found is None else (found.start, found.end)
        if found is not None:
            assert 0 <= found.start <= found.end < size
    if re.fullmatch(rb"bytes=[0-9]*-[0-9]*", header):
        assert answer == exact_range(header, size)


def test_parse_range_with_numbers_too_long_for_int() -> None:
    """5,000-digit numbers: a start past the end, an end at the last byte."""
    huge = b"9" * 5000
    with pytest.raises(Unsatisfiable):
        parse_range(b"bytes=" + huge + b"-", 10)
    assert parse_range(b"bytes=2-" + huge, 10) == ByteRange(2, 9)
    assert parse_range(b"bytes=-" + huge, 10) == ByteRange(0, 9)
    assert parse_range(b"bytes=" + huge + b"-5", 10) is None  # last < first
    assert parse_range(b"bytes=" + b"0" * 5000 + b"3-4", 10) == ByteRange(3, 4)


@given(value=st.one_of(st.binary(max_size=40), st.from_regex(rb"[0-9]{1,40}")))
@PURE
def test_content_length_is_bounded(value: bytes) -> None:
    """Any value: None, or the number of 1 to 19 digits it is."""
    length = content_length(value)
    digits = value.strip(b" \t")
    if re.fullmatch(rb"[0-9]{1,19}", digits):
        assert length == int(digits)
    else:
        assert length is None


@given(
    method=st.binary(max_size=10),
    version=st.sampled_from([b"HTTP/1.0", b"HTTP/1.1"]),
    headers=st.lists(
        st.tuples(st.sampled_from([b"Host", b"Content-Range"]), st.binary(max_size=40)),
        max_size=4,
    ),
)
@PURE
def test_head_problem_never_raises(
    method: bytes, version: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Any Host and Content-Range headers: a reason or None, never an exception."""
    raw = Headers()
    for name, value in headers:
        raw.addRawHeader(name, value)
    problem = head_problem(method, version, raw)
    hosts = [v for n, v in headers if n == b"Host"]
    if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
        assert problem is not None and "Host" in problem


@given(value=st.binary(max_size=600), limit=st.integers(1, 300))
@PURE
def test_log_safe_is_printable_bounded_and_unambiguous(
    value: bytes, limit: int
) -> None:
    """Any bytes: printable ASCII, at most 4 characters per byte kept, reversible."""
    text = log_safe(value, limit)
    body = text.removesuffix("…")
    assert all(0x20 <= ord(c) < 0x7F for c in body)
    assert len(body) <= 4 * limit
    decoded = body.encode("ascii").decode("unicode_escape")
    assert decoded == value.decode("latin-1")[:limit]


@given(text=st.text(max_size=60))
@PURE
def test_canonical_address_is_plain(text: str) -> None:
    """Any hop: None or a printable address that is its own canonical form."""
    address = canonical_address(text)
    if address is not None:
        assert address.isascii() and address.isprintable() and "%" not in address
        assert canonical_address(address) == address


def test_forwarded_zones_and_mapped_addresses(logged_wire: Harness) -> None:
    """Behind a trusted proxy: a hop with a zone id is no address, a mapped one IPv4."""
    logged_wire.site.trusted_proxies = parse_networks(["192.0.2.0/24"])
    with capturedLogs() as events:
        for hop in (b"fe80::1%\x1b[31mred", b"::ffff:203.0.113.9"):
            logged_wire.send(
                b"GET /x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: " + hop + b"\r\n\r\n"
            )
    lines = access_lines(events)
    assert lines[0].startswith("192.0.2.7 - - "), lines
    assert lines[1].startswith("203.0.113.9 - - "), lines
