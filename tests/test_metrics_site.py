"""The metrics listener's Site holds to the same wire rules as the upload site."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from httpupload.metrics import Metrics, MetricsResource
from httpupload.testing import Wire
from httpupload.web.site import MetricsSite


def _wire() -> Wire:
    """The metrics site, on a clock, in memory."""
    clock = MemoryReactorClock()
    site = MetricsSite(
        MetricsResource(Metrics(), lambda: {"status": "ok"}), clock, idle_timeout=60
    )
    return Wire(site, clock)


def test_metrics_answers_without_a_server_header() -> None:
    """/metrics is served, with no Server header naming Twisted or its version."""
    conn = _wire().send(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert conn.head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nserver:" not in conn.head.lower()
    assert b"httpupload_slots" in conn.body


def test_a_large_body_sent_to_metrics_is_not_kept() -> None:
    """A POST announcing 100 MiB is answered at once and closed, not spooled."""
    conn = _wire().send(
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 104857600\r\n\r\n" + b"x" * 65536
    )
    assert conn.received.startswith(b"HTTP/1.1 ")
    assert conn.closed


def test_an_idle_metrics_connection_is_closed() -> None:
    """A connection that sends nothing is closed after the idle timeout, not 12 h."""
    wire = _wire()
    conn = wire.connect()
    wire.advance(59)
    assert not conn.closed
    wire.advance(2)
    assert conn.closed
