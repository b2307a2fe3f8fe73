"""Resumable uploads on a slot URL, over raw HTTP, per protocol and version (#12).

Built from the texts (the IETF draft at interop versions 3, 5, 6 and 8, and
tus 1.0), for what the shipped clients in the end-to-end tests do not send:
the opt-in on a plain PUT, the 104, offset retrieval, appends, wrong
offsets, cancellation, completion, limits, the expiry of idle partial
uploads, and a completed slot PUT again.  Everything runs on the in-memory
site (our channel and request over iosim, on a clock).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.testing import Harness, Minted, make_harness, result_of
from httpupload.testing._wire import Connection

SIZE = 300_000
DATA = os.urandom(SIZE)


@dataclass
class Response:
    """One response head (and the final one's body) as the client saw it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def responses(received: bytes) -> list[Response]:
    """Every response in ``received``: interim ones, then the final one."""
    out: list[Response] = []
    rest = received
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        response = Response(int(lines[0].split()[1]))
        for line in lines[1:]:
            name, _, value = line.partition(":")
            response.headers[name.strip().lower()] = value.strip()
        if response.status >= 200:
            length = int(response.headers.get("content-length", "0"))
            response.body, rest = rest[:length], rest[length:]
        out.append(response)
    return out


def final(conn: Connection) -> Response:
    found = responses(conn.received)
    assert found and found[-1].status >= 200, conn.received[:300]
    return found[-1]


def raw(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    length: int | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: x"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length is None and (body or method in ("PUT", "PATCH")):
        length = len(body)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def ask(
    h: Harness,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Response:
    return final(h.send(raw(method, target, headers, body)))


def cut(
    h: Harness,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    length: int,
) -> Connection:
    """A request whose body breaks off after ``body`` (of ``length``)."""
    conn = h.send(raw(method, target, headers, body, length=length))
    conn.abort()
    h.flush()
    return conn


def site() -> Harness:
    """The service's site on memory stores, records included."""
    return make_harness(metadata=MemoryMetadataStore(), http={"min_upload_rate": 0})


@pytest.fixture
def h() -> Harness:
    return site()


def put_target(slot: Minted) -> str:
    """The slot's PUT URL as a request target, token in the query."""
    return f"{slot.path}?token={slot.token}"


def digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def stored(h: Harness, slot: Minted) -> bytes | None:
    answer = h.request("GET", h.base + slot.slot.path)
    return answer.body if answer.code == 200 else None


# -- tus 1.0 --------------------------------------------------------------------

TUS = {"Tus-Resumable": "1.0.0"}
TUS_PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


def test_tus_uploads_and_resumes_with_no_creation_step(h: Harness) -> None:
    """A tus client given the PUT URL: HEAD says offset 0, PATCHes append, a cut
    PATCH keeps what came, HEAD says where, the last PATCH completes the file."""
    slot = h.grant("t.bin", SIZE)
    url = put_target(slot)
    head = ask(h, "HEAD", url, TUS)
    assert head.status == 200
    assert (head["Upload-Offset"], head["Upload-Length"]) == ("0", str(SIZE))
    assert head["Tus-Resumable"] == "1.0.0"
    assert head["Cache-Control"] == "no-store"
    first = ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "0"}, DATA[:100_000])
    assert first.status == 204 and first["Upload-Offset"] == "100000"
    cut(
        h,
        "PATCH",
        url,
        {**TUS_PATCH, "Upload-Offset": "100000"},
        DATA[100_000:150_000],
        length=200_000,
    )
    head = ask(h, "HEAD", url, TUS)
    assert head["Upload-Offset"] == "150000"
    assert stored(h, slot) is None  # never served before it is whole
    last = ask(
        h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "150000"}, DATA[150_000:]
    )
    assert last.status == 204 and last["Upload-Offset"] == str(SIZE)
    assert stored(h, slot) == DATA
    assert ask(h, "HEAD", url, TUS)["Upload-Offset"] == str(SIZE)


def test_tus_refusals(h: Harness) -> None:
    """A wrong offset is a 409 with the right one; a PATCH of another type a
    415; another tus version a 412; past the slot's size a 413."""
    slot = h.grant("t.bin", 10)
    url = put_target(slot)
    wrong = ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "4"}, b"abc")
    assert wrong.status == 409 and wrong["Upload-Offset"] == "0"
    assert wrong["Tus-Resumable"] == "1.0.0"
    typed = ask(
        h,
        "PATCH",
        url,
        {**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"},
        b"abc",
    )
    assert typed.status == 415
    other = ask(
        h,
        "PATCH",
        url,
        {
            "Tus-Resumable": "0.2.2",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        b"abc",
    )
    assert other.status == 412
    big = ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "0"}, b"x" * 11)
    assert big.status == 413
    assert stored(h, slot) is None


def test_tus_termination_and_method_override(h: Harness) -> None:
    """DELETE throws the partial upload away (HEAD: 0 again); a POST with
    X-HTTP-Method-Override: PATCH appends; OPTIONS names the version."""
    slot = h.grant("t.bin", 6)
    url = put_target(slot)
    ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "0"}, b"abc")
    assert ask(h, "DELETE", url, TUS).status == 204
    assert ask(h, "HEAD", url, TUS)["Upload-Offset"] == "0"
    over = ask(
        h,
        "POST",
        url,
        {**TUS_PATCH, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
        b"abcdef",
    )
    assert over.status == 204 and over["Upload-Offset"] == "6"
    assert stored(h, slot) == b"abcdef"
    options = ask(h, "OPTIONS", slot.path)
    assert options["Tus-Version"] == "1.0.0"
    assert "termination" in options["Tus-Extension"]
    assert "X-HTTP-Method-Override" in options["Access-Control-Allow-Headers"]
    assert "Upload-Offset" in options["Access-Control-Expose-Headers"]


# -- the IETF draft, by interop version --------------------------------------------

VERSIONS = [3, 5, 6, 8]


def complete_header(version: int, complete: bool) -> dict[str, str]:
    if version == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def says_complete(version: int, response: Response) -> bool:
    if version == 3:
        return response.get("Upload-Incomplete") == "?0"
    return response.get("Upload-Complete") == "?1"


@pytest.mark.parametrize("version", VERSIONS)
def test_an_opted_in_put_breaks_and_resumes(h: Harness, version: int) -> None:
    """Apple-style opt-in on the slot's PUT: a 104 names the upload resource;
    the PUT breaks; HEAD there gives the offset in the version's headers; a
    PATCH with the rest completes the upload, answered as the PUT would be."""
    slot = h.grant("i.bin", SIZE)
    headers = {
        **slot.headers,
        "Upload-Draft-Interop-Version": str(version),
        **complete_header(version, True),
    }
    conn = cut(h, "PUT", slot.path, headers, DATA[:120_000], length=SIZE)
    interim = responses(conn.received)
    assert [r.status for r in interim] == [104]
    assert interim[0]["Upload-Draft-Interop-Version"] == str(version)
    location = interim[0]["Location"]
    assert location.startswith(slot.path.rsplit("/", 1)[-1] + "?token=")
    resource = slot.path.rsplit("/", 1)[0] + "/" + location
    v = {"Upload-Draft-Interop-Version": str(version)}
    head = ask(h, "HEAD", resource, v)
    assert head.status == 204
    assert head["Upload-Offset"] == "120000"
    assert not says_complete(version, head)
    assert head["Cache-Control"] == "no-store"
    assert (head.get("Upload-Length") == str(SIZE)) == (version >= 6)
    limit = head.get("Upload-Limit") or ""
    assert ("expires=" in limit) == (version == 5)
    assert ("max-age=" in limit) == (version >= 6)
    assert (limit == "") == (version == 3)
    patch_type = {} if version == 3 else {"Content-Type": "application/partial-upload"}
    done = ask(
        h,
        "PATCH",
        resource,
        {
            **v,
            **patch_type,
            "Upload-Offset": "120000",
            **complete_header(version, True),
        },
        DATA[120_000:],
    )
    assert done.status == 201
    assert says_complete(version, done)
    assert done["Repr-Digest"] == digest(DATA)
    assert stored(h, slot) == DATA


@pytest.mark.parametrize("version", VERSIONS)
def test_appends_offsets_and_cancellation(h: Harness, version: int) -> None:
    """Creation with more to follow answers 201 with Location; an incomplete
    append gets the version's status; a wrong offset a 409 with the right one
    (interop 8: a problem document); HEAD with offset headers is a 400;
    DELETE ends the partial upload."""
    slot = h.grant("i.bin", 9)
    v = {"Upload-Draft-Interop-Version": str(version)}
    url = put_target(slot)
    created = ask(h, "PUT", url, {**v, **complete_header(version, False)}, b"abc")
    assert created.status == 201 and "token=" in created["Location"]
    assert created["Upload-Offset"] == "3"
    append = ask(
        h,
        "PATCH",
        url,
        {**v, "Upload-Offset": "3", **complete_header(version, False)},
        b"def",
    )
    assert append.status == (201 if version <= 5 else 204)
    assert append["Upload-Offset"] == "6"
    wrong = ask(
        h,
        "PATCH",
        url,
        {**v, "Upload-Offset": "2", **complete_header(version, True)},
        b"cdefghi",
    )
    assert wrong.status == 409 and wrong["Upload-Offset"] == "6"
    if version >= 8:
        assert wrong["Content-Type"] == "application/problem+json"
        assert b'"expected-offset": 6' in wrong.body
    assert ask(h, "HEAD", url, {**v, "Upload-Offset": "6"}).status == 400
    assert ask(h, "DELETE", url, v).status == 204
    assert ask(h, "HEAD", url, v)["Upload-Offset"] == "0"
    assert stored(h, slot) is None


def test_the_104_is_a_setting() -> None:
    """No 104 when set to never, nor by default through a trusted proxy
    (nginx 1.22 mishandles it); "always" sends it through the proxy too."""
    from twisted.internet.address import IPv4Address

    proxy = IPv4Address("TCP", "10.0.0.1", 4321)
    for setting, peer, expected in [
        ("never", None, []),
        ("direct", proxy, []),
        ("always", proxy, [104]),
        ("direct", None, [104]),
    ]:
        h = make_harness(
            metadata=MemoryMetadataStore(),
            http={
                "min_upload_rate": 0,
                "interim_104": setting,
                "trusted_proxies": ["10.0.0.0/8"],
            },
        )
        slot = h.grant("i.bin", 10)
        conn = h.send(
            raw(
                "PUT",
                put_target(slot),
                {"Upload-Draft-Interop-Version": "6", "Upload-Complete": "?1"},
                b"12345",
                length=10,
            ),
            peer=peer,
        )
        assert [r.status for r in responses(conn.received)] == expected, setting


# -- plain clients: "did my upload land?" and retries ------------------------------


def test_did_my_upload_land(h: Harness) -> None:
    """HEAD on the PUT URL with the token: absent (404, offset 0), incomplete
    (how far), complete (with its Repr-Digest)."""
    slot = h.grant("p.bin", SIZE)
    url = put_target(slot)
    absent = ask(h, "HEAD", url)
    assert absent.status == 404 and absent["Upload-Offset"] == "0"
    cut(h, "PUT", url, {}, DATA[:1000], length=SIZE)
    partial = ask(h, "HEAD", url)
    assert partial.status == 204
    assert (partial["Upload-Offset"], partial["Upload-Complete"]) == ("1000", "?0")
    assert ask(h, "PUT", url, {}, DATA).status == 201  # from 0: replaces it
    done = ask(h, "HEAD", url)
    assert (done.status, done["Upload-Complete"]) == (204, "?1")
    assert done["Repr-Digest"] == digest(DATA)
    # Without the token, HEAD is the download's, as before.
    assert ask(h, "HEAD", slot.path).get("Content-Length") == str(SIZE)


def test_a_completed_slot_put_again(h: Harness) -> None:
    """The same bytes again: 201 (read and compared, or at once from a
    matching Repr-Digest); other bytes, or another digest: 409.  The stored
    file never changes."""
    slot = h.grant("p.bin", 6)
    url = put_target(slot)
    assert ask(h, "PUT", url, {}, b"abcdef").status == 201
    assert ask(h, "PUT", url, {}, b"abcdef").status == 201
    assert ask(h, "PUT", url, {}, b"abcdeX").status == 409
    assert (
        ask(h, "PUT", url, {"Repr-Digest": digest(b"abcdef")}, b"abcdef").status == 201
    )
    assert (
        ask(h, "PUT", url, {"Repr-Digest": digest(b"other!")}, b"abcdef").status == 409
    )
    assert stored(h, slot) == b"abcdef"


def test_a_partial_upload_outlives_its_token_then_expires(h: Harness) -> None:
    """Kept bytes keep the slot's URL valid past its token's lifetime, for
    partial_lifetime after the last byte; then the URL and the bytes go."""
    slot = h.grant("p.bin", 10)
    url = put_target(slot)
    cut(h, "PUT", url, {}, b"12345", length=10)
    h.advance(3600)  # far past the 300 s token
    resumed = ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "5"}, b"67")
    assert resumed.status == 204 and resumed["Upload-Offset"] == "7"
    lifetime = h.receiver.partial_lifetime
    h.advance(lifetime + 1)
    assert ask(h, "HEAD", url, TUS).status in (403, 404)
    late = ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "7"}, b"890")
    assert late.status in (403, 404)
    assert stored(h, slot) is None


def test_a_body_cut_past_its_slot_keeps_no_more_than_the_slot() -> None:
    """A chunked PATCH that runs past the slot's size is cut off at the size."""
    h = site()
    slot = h.grant("p.bin", 8)
    url = put_target(slot)
    body = b"5\r\n12345\r\n6\r\n678901\r\n0\r\n\r\n"
    conn = h.send(
        f"PATCH {url} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
        + body
    )
    h.flush()
    assert conn.closed
    assert ask(h, "HEAD", url, TUS)["Upload-Offset"] == "8"
    assert stored(h, slot) is None


# -- any order of requests, any cut: the bytes or nothing -----------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["patch", "cut", "head", "delete", "put"]),
        st.integers(min_value=0, max_value=2000),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_any_order_of_requests_stores_the_bytes_or_nothing(
    ops: list[tuple[str, int]],
) -> None:
    """HEAD, PATCH (whole or cut), DELETE and PUT in any order and at any cut
    point: the file served is the uploaded bytes or nothing, never a mix."""
    h = site()
    data = os.urandom(2000)
    slot = h.grant("p.bin", len(data))
    url = put_target(slot)
    for op, n in ops:
        offset = int(ask(h, "HEAD", url, TUS)["Upload-Offset"])
        if op == "head":
            continue
        if op == "delete":
            ask(h, "DELETE", url, TUS)
        elif op == "put":
            cut(h, "PUT", url, {}, data[: n % len(data)], length=len(data))
        elif op == "cut":
            end = offset + (n % (len(data) - offset + 1))
            cut(
                h,
                "PATCH",
                url,
                {**TUS_PATCH, "Upload-Offset": str(offset)},
                data[offset:end],
                length=len(data) - offset,
            )
        else:
            end = offset + (n % (len(data) - offset + 1))
            ask(
                h,
                "PATCH",
                url,
                {**TUS_PATCH, "Upload-Offset": str(offset)},
                data[offset:end],
            )
        served = stored(h, slot)
        assert served is None or served == data
    offset = int(ask(h, "HEAD", url, TUS)["Upload-Offset"])
    ask(h, "PATCH", url, {**TUS_PATCH, "Upload-Offset": str(offset)}, data[offset:])
    assert stored(h, slot) == data


def test_the_rules_are_judged_again_when_an_upload_completes() -> None:
    """A resumed upload completes hours after its grant: if the owner may no
    longer upload (denied meanwhile), it is refused then, its file and record
    gone; nothing is served."""
    from httpupload.testing import make_config

    h = site()
    slot = h.grant("p.bin", 10, owner="romeo@example.org")
    url = put_target(slot)
    cut(h, "PUT", url, {}, b"12345", length=10)
    # The operator denies the account; the service restarts with the rule.
    denied = make_config(access={"deny_jids": ["romeo@example.org"]})
    later = make_harness(
        denied,
        storage=h.storage,
        metadata=h.metadata,
        clock=h.clock,
        http={"min_upload_rate": 0},
    )
    done = ask(later, "PATCH", url, {**TUS_PATCH, "Upload-Offset": "5"}, b"67890")
    assert done.status == 403
    assert b"Refused at completion" in done.body
    assert stored(later, slot) is None
    assert h.metadata is not None
    assert result_of(h.metadata.get(slot.slot.file_id)) is None
