"""Test our own ``UploadSite`` in memory: no sockets, no threads, no wall clock.

Public, for the project's tests and for embedders testing their own service.
The site (with its own channel and request classes, so PUT bodies take the
real streaming path) is connected to clients over ``twisted.test.iosim`` on
a ``MemoryReactorClock``, as treq's ``testing.py`` does for a plain ``Site``,
with flow control added: each side may stop reading (``pauseProducing`` on
its transport, which is what the site does while storage is behind, and what
a test does to play a client that stops reading), and a writer whose bytes
pile up past ``HIGH_WATER`` is paused as a real transport pauses it.

A round trip::

    from httpupload.testing import make_harness

    h = make_harness(http={"min_upload_rate": 0})   # any config keys
    slot = h.mint("a.txt", 5)
    assert h.request("PUT", slot.url, data=b"hello", headers=slot.headers).code == 201
    assert h.request("GET", slot.url).body == b"hello"

Step by step (a slow body, a timeout)::

    slot = h.mint("b.txt", 5)
    body = SlowBody(5)
    d = h.start_request("PUT", slot.url, data=body, headers=slot.headers)
    body.write(b"he")
    h.flush()
    h.advance(61)                      # the clock, never a sleep
    failure = h.failure_of(d)          # idle for the idle timeout: cut off

Exact bytes, for the wire format::

    conn = h.send(b"GET /x HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    assert conn.status == 404 and not conn.closed
    conn.pause_reading()               # the server's writes now pile up

``MemoryStorage`` and ``MemoryMetadataStore`` honour the storage and metadata
protocols with every Deferred already fired: ``make_harness(metadata=
MemoryMetadataStore())`` serves files by their records, as the service does
(without one the site serves what storage holds, as some embeddings run it).
``make_config`` builds a checked, frozen ``Config`` from a few overrides
(parsed by ``httpupload.config``, so defaults stay in one place), ``make_site``
builds the ``UploadSite`` as the service does, and ``stored_file`` puts a file
into a storage (and a metadata store) as a finished upload would.
"""

from __future__ import annotations

from httpupload.metadata.memory import MemoryMetadataStore
from httpupload.storage.memory import MemoryStorage
from httpupload.testing._http import Answer, SlowBody, WholeBody
from httpupload.testing._site import (
    BASE_CONFIG,
    OWNER,
    START,
    TEST_KEY,
    Harness,
    Minted,
    make_config,
    make_harness,
    make_receiver,
    make_site,
    stored_file,
)
from httpupload.testing._wire import (
    HIGH_WATER,
    HOST,
    PEER,
    SEGMENT,
    Connection,
    FlowTransport,
    Pump,
    RawClient,
    Wire,
    connect_pair,
    result_of,
    settle,
    status_of,
)

__all__ = [
    "BASE_CONFIG",
    "HIGH_WATER",
    "HOST",
    "OWNER",
    "PEER",
    "SEGMENT",
    "START",
    "TEST_KEY",
    "Answer",
    "Connection",
    "FlowTransport",
    "Harness",
    "MemoryMetadataStore",
    "MemoryStorage",
    "Minted",
    "Pump",
    "RawClient",
    "SlowBody",
    "WholeBody",
    "Wire",
    "connect_pair",
    "make_config",
    "make_harness",
    "make_receiver",
    "make_site",
    "result_of",
    "settle",
    "status_of",
    "stored_file",
]
