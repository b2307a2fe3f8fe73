"""Prometheus metrics and a health check, on a listener of their own.

The registry is per service (not prometheus_client's global one), so tests
and embedders can run several.  Everything is counted at one place per
protocol: slot answers in the XMPP handler, HTTP answers in the site's
access-log hook.

Below the protocols (both count here), it imports neither ``httpupload.web``
nor ``httpupload.xmpp``.  Label values come only from sets the service
defines, never from a client: a method it does not serve is ``other``, and so
is a status outside the registered HTTP codes, so no request can add a series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from twisted.web.http import RESPONSES, Request
from twisted.web.resource import Resource

from httpupload.errors import SlotRequestError

# The methods UploadResource serves (everything else gets 405).
SERVED_METHODS = frozenset({"GET", "HEAD", "PUT", "OPTIONS"})


def method_label(method: bytes) -> str:
    """The method as a label: one the service serves, else ``other``."""
    try:
        text = method.decode("ascii")
    except UnicodeDecodeError:
        return "other"
    return text if text in SERVED_METHODS else "other"


def status_label(code: object) -> str:
    """The status as a label: a registered HTTP status, else ``other``."""
    return str(code) if isinstance(code, int) and code in RESPONSES else "other"


def refusal_reason(error: SlotRequestError) -> str:
    """``QuotaExceeded`` -> ``quota_exceeded``: the label of a refused slot."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


class Metrics:
    """The service's counters and gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.slots = Counter(
            "httpupload_slots",
            "Slot requests answered, by result",
            ["result"],
            registry=r,
        )
        self.http = Counter(
            "httpupload_http_responses",
            "HTTP responses, by method and status",
            ["method", "status"],
            registry=r,
        )
        self.received = Counter(
            "httpupload_received_bytes", "Bytes of files stored", registry=r
        )
        self.sent = Counter(
            "httpupload_sent_bytes", "Bytes of files served", registry=r
        )
        self.uploads_in_flight = Gauge(
            "httpupload_uploads_in_flight",
            "Uploads receiving or committing",
            registry=r,
        )
        self.storage_used = Gauge(
            "httpupload_storage_used_bytes",
            "Bytes held: stored files and live slots",
            registry=r,
        )
        self.xmpp_connected = Gauge(
            "httpupload_xmpp_connected", "1 while the component link is up", registry=r
        )
        self.xmpp_standby = Gauge(
            "httpupload_xmpp_standby",
            "1 while another node holds the component and this one stands by",
            registry=r,
        )

        # Looked up once: labels() costs more than the increment itself.
        self._granted = self.slots.labels(result="granted")

    def watch_component(self, state: Callable[[], str]) -> None:
        """Read the link's state (``online``, ``standby``, ``offline``) at scrapes.

        Two gauges rather than one with three values: alerts on
        ``httpupload_xmpp_connected == 0`` must not fire for a standby node
        unless ``httpupload_xmpp_standby`` is 0 too.
        """
        self.xmpp_connected.set_function(lambda: 1 if state() == "online" else 0)
        self.xmpp_standby.set_function(lambda: 1 if state() == "standby" else 0)

    def slot_granted(self) -> None:
        self._granted.inc()

    def slot_refused(self, error: SlotRequestError) -> None:
        self.slots.labels(result=refusal_reason(error)).inc()

    def http_response(self, request: Request) -> None:
        method = method_label(request.method or b"")
        status = request.code
        self.http.labels(method=method, status=status_label(status)).inc()
        if method == "PUT" and status == 201:
            # A 201 follows only a Content-Length the web layer checked.
            length = request.requestHeaders.getRawHeaders(b"Content-Length") or [b"0"]
            self.received.inc(int(length[0]) if length[0].isdigit() else 0)
        elif method == "GET" and status in (200, 206):
            self.sent.inc(request.sentLength or 0)


class MetricsResource(Resource):
    """``/metrics`` (Prometheus text format) and ``/health`` (JSON)."""

    isLeaf = True

    def __init__(
        self, metrics: Metrics, healthy: Callable[[], dict[str, object]]
    ) -> None:
        super().__init__()
        self.metrics = metrics
        self.healthy = healthy

    def render_GET(self, request: Request) -> bytes:
        if request.path == b"/metrics":
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
            return generate_latest(self.metrics.registry)
        if request.path == b"/health":
            state = self.healthy()
            request.setResponseCode(200 if state.get("status") == "ok" else 503)
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps(state).encode("utf-8")
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain")
        return b"Not found: try /metrics or /health\n"
