"""The upload path under pressure: early refusals, limits, timeouts, drain.

Driven in memory (``httpupload.testing``): our own ``UploadSite`` over iosim
on a ``MemoryReactorClock``; time passes with the clock, never a sleep.
"""

from __future__ import annotations

from typing import Any

from httpupload.testing import Connection, Harness, Minted, make_harness


def site(**http: Any) -> Harness:
    """A site with default limits but no rate floor, unless told otherwise."""
    return make_harness(http={"min_upload_rate": 0, **http})


def put_head(slot: Minted, length: int, *extra: str) -> bytes:
    lines = [f"PUT {slot.path} HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def bearer(slot: Minted) -> str:
    return f"Authorization: Bearer {slot.token}"


def hold_upload(h: Harness, slot: Minted) -> Connection:
    """A PUT whose first half of the body is in, the rest still to come."""
    conn = h.send(put_head(slot, slot.slot.size, bearer(slot)))
    return conn.write(b"x" * (slot.slot.size // 2))


def test_token_in_query_string() -> None:
    """The token may ride in the URL; either carrier is accepted."""
    h = site()
    slot = h.mint(size=5)
    assert h.request("PUT", f"{slot.url}?token=x", data=b"hello").code == 403
    answer = h.request(
        "PUT",
        f"{slot.url}?token={slot.token}",
        data=b"hello",
        headers={"Authorization": "Bearer wrong"},
    )
    assert answer.code == 201
    assert h.request("GET", slot.url).body == b"hello"
    other = h.mint(size=3)
    assert h.request("PUT", f"{other.url}?token={other.token}", data=b"abc").code == 201


def test_refusal_without_100_continue() -> None:
    """A PUT that will be refused gets its answer at once, never 100 Continue."""
    h = site()
    slot = h.mint(size=5)
    for length, token in ((5, "forged"), (6, slot.token)):
        conn = h.send(
            put_head(
                slot, length, f"Authorization: Bearer {token}", "Expect: 100-continue"
            )
        )
        assert b"100 Continue" not in conn.received
        assert conn.status == (403 if token == "forged" else 400)
        assert b"Access-Control-Allow-Origin: *" in conn.head


def test_accepted_put_gets_100_continue() -> None:
    """An acceptable PUT with Expect gets 100 Continue, then 201."""
    h = site()
    slot = h.mint(size=5)
    conn = h.send(put_head(slot, 5, bearer(slot), "Expect: 100-continue"))
    assert conn.received.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.write(b"hello")
    assert conn.received.split(b"\r\n\r\n", 1)[1].startswith(b"HTTP/1.1 201 ")


def test_huge_refused_body_is_not_read() -> None:
    """A refused PUT announcing a huge body is answered from its headers alone."""
    h = site()
    slot = h.mint(size=5)
    conn = h.send(put_head(slot, 10**12, "Authorization: Bearer nope"))
    assert conn.status == 403
    assert conn.closed
    assert h.storage.pending == set()
    assert h.storage.aborted == 0


def test_uploads_per_address_are_bounded() -> None:
    """Over the per-address bound: 429 saying so; once the first is done, room again."""
    h = site(max_uploads_per_address=1)
    first = h.mint(size=1000)
    conn = hold_upload(h, first)
    assert h.receiver.in_flight == 1
    second = h.mint(size=5)
    answer = h.request("PUT", second.url, data=b"hello", headers=second.headers)
    assert answer.code == 429
    assert b"At most 1 upload at a time from one address" in answer.body
    conn.write(b"x" * 500)
    assert conn.status == 201
    conn.close()
    answer = h.request("PUT", second.url, data=b"hello", headers=second.headers)
    assert answer.code == 201


def test_the_bound_is_said_in_the_plural_above_one() -> None:
    """The 429 of a bound above one says "uploads"."""
    h = site(max_uploads_per_address=2)
    held = [hold_upload(h, h.mint(size=1000)) for _ in range(2)]
    third = h.mint(size=5)
    answer = h.request("PUT", third.url, data=b"hello", headers=third.headers)
    assert answer.code == 429
    assert b"At most 2 uploads at a time from one address" in answer.body
    assert all(not conn.closed for conn in held)


def test_drain_lets_uploads_finish_and_refuses_new_ones() -> None:
    """Draining: new PUTs get 503; one in flight finishes and is stored."""
    h = site()
    slot = h.mint(size=1000)
    conn = hold_upload(h, slot)
    assert h.receiver.in_flight == 1
    drained = h.receiver.drain(grace=30)
    assert not drained.called
    other = h.mint(size=5)
    assert h.request("PUT", other.url, data=b"hello", headers=other.headers).code == 503
    conn.write(b"x" * 500)
    assert conn.status == 201
    # The drain closes the connection once the answer is out, then finishes.
    assert conn.closed
    assert drained.called
    answer = h.request("GET", slot.url)
    assert (answer.code, len(answer.body)) == (200, 1000)


def test_drain_cuts_off_after_the_grace_period() -> None:
    """After the grace period, unfinished uploads are cut off and discarded."""
    h = site()
    slot = h.mint(size=1000)
    conn = hold_upload(h, slot)
    drained = h.receiver.drain(grace=5)
    h.advance(4.9)
    assert not drained.called and not conn.closed
    h.advance(0.1)
    assert drained.called
    assert conn.closed
    assert h.storage.pending == set()
    assert h.request("GET", slot.url).code == 404


def test_slow_request_head_is_cut_off() -> None:
    """A head trickling in slower than the header timeout is dropped, though the
    connection is never idle for the idle timeout."""
    h = site(header_timeout=1, idle_timeout=5)
    conn = h.send(b"PUT /x HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):
        h.advance(0.25)
        conn.write(b"X-Slow: y\r\n")
    assert not conn.closed
    h.advance(0.25)
    assert conn.closed
    assert conn.received == b""


def test_slow_upload_is_cut_off() -> None:
    """An upload below the minimum rate is cut off (though never idle for the
    idle timeout) and leaves nothing."""
    h = site(idle_timeout=1, min_upload_rate=1_000_000)
    slot = h.mint(size=100_000)
    conn = h.send(put_head(slot, 100_000, bearer(slot)))
    for _ in range(3):
        h.advance(0.25)
        conn.write(b"x" * 10)
    assert not conn.closed
    h.advance(0.25)
    assert conn.closed
    assert h.receiver.in_flight == 0
    assert h.storage.pending == set()
    assert h.storage.files == {}


def test_header_count_is_bounded() -> None:
    """A request with too many headers is refused with 400."""
    h = site()
    extra = "".join(f"X-H{i}: v\r\n" for i in range(150))
    conn = h.send(f"GET /x HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    assert conn.status == 400
