"""Metrics count slots by result and HTTP answers by method and status."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.words.xish import domish
from wokkel import disco, generic
from wokkel.test import helpers

from httpupload.errors import QuotaExceeded
from httpupload.metrics import Metrics, method_label, refusal_reason, status_label
from httpupload.policy import SlotPolicy
from httpupload.slots import SlotSigner
from httpupload.testing import make_harness
from httpupload.xmpp.handler import UploadHandler
from httpupload.xmpp.stanzas import NS_UPLOAD


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_refusal_reasons() -> None:
    """Labels come from the error class: QuotaExceeded -> quota_exceeded."""
    assert refusal_reason(QuotaExceeded("x", 1.0)) == "quota_exceeded"


def test_labels_are_only_the_services_own() -> None:
    """Methods not served and statuses not registered are all labelled other."""
    assert [method_label(m) for m in (b"GET", b"HEAD", b"PUT", b"OPTIONS")] == [
        "GET",
        "HEAD",
        "PUT",
        "OPTIONS",
    ]
    for invented in (b"get", b"DELETE", b"ZZ" * 2000, b"\xff", b""):
        assert method_label(invented) == "other"
    assert status_label(201) == "201"
    assert status_label(416) == "416"
    for odd in (0, 99, 600, 10**20, "200", None):
        assert status_label(odd) == "other"


def test_slots_counted_by_result() -> None:
    """Granted slots and each kind of refusal have their own counter."""
    metrics = Metrics()
    clock = Clock()
    manager = helpers.TestableStreamManager(reactor=clock)
    for handler in (
        generic.FallbackHandler(),
        disco.DiscoHandler(),
        UploadHandler(
            SlotPolicy(100, ("x.org",)),
            SlotSigner(b"k" * 32, clock),
            "https://u/",
            "https://u/",
            300,
            metrics=metrics,
        ),
    ):
        handler.setHandlerParent(manager)
    for size, sender in (("5", "a@x.org/r"), ("500", "a@x.org/r"), ("5", "e@y.org/r")):
        iq = domish.Element((None, "iq"))
        iq["type"], iq["id"], iq["from"], iq["to"] = "get", "1", sender, "u"
        request = iq.addElement((NS_UPLOAD, "request"))
        request["filename"], request["size"] = "a", size
        manager.stub.send(iq)
    assert sample(metrics, "httpupload_slots_total", result="granted") == 1
    assert sample(metrics, "httpupload_slots_total", result="file_too_large") == 1
    assert sample(metrics, "httpupload_slots_total", result="not_allowed") == 1


def test_http_counted_by_method_and_status() -> None:
    """Every finished request is counted once; bytes in and out are summed."""
    metrics = Metrics()
    h = make_harness(metrics=metrics)
    url = h.upload(b"hello world")
    assert h.request("GET", url).code == 200
    assert h.request("GET", url + "x").code == 404
    assert h.request("PUT", url, data=b"hello world").code == 403
    assert (
        sample(metrics, "httpupload_http_responses_total", method="PUT", status="201")
        == 1
    )
    assert (
        sample(metrics, "httpupload_http_responses_total", method="PUT", status="403")
        == 1
    )
    assert (
        sample(metrics, "httpupload_http_responses_total", method="GET", status="200")
        == 1
    )
    assert (
        sample(metrics, "httpupload_http_responses_total", method="GET", status="404")
        == 1
    )
    assert sample(metrics, "httpupload_received_bytes_total") == 11
    assert sample(metrics, "httpupload_sent_bytes_total") >= 11


def test_link_gauges_tell_standby_from_offline() -> None:
    """Connected and standby gauges follow the component's state at each scrape."""
    metrics = Metrics()
    state = ["offline"]
    metrics.watch_component(lambda: state[0])
    seen = {}
    for state[0] in ("offline", "standby", "online"):
        seen[state[0]] = (
            sample(metrics, "httpupload_xmpp_connected"),
            sample(metrics, "httpupload_xmpp_standby"),
        )
    assert seen == {
        "offline": (0, 0),
        "standby": (0, 1),
        "online": (1, 0),
    }
