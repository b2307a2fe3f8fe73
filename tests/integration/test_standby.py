"""Active and standby component nodes on one real Prosody.

Prosody accepts one connection per component name and refuses a second with a
``<conflict/>`` stream error. Two ``twistd -n httpupload`` processes with the
same component name and signing key: the second stands by, and when the first
is killed (SIGKILL, nothing said to the server) it takes over within seconds.
"""

from __future__ import annotations

import secrets
import signal
import time
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from client import Slot, XmppClient, download, poll
from prosody import Prosody
from twistd import ONLINE_PATTERN, HttpUpload

pytestmark = pytest.mark.integration

STANDING_BY = "standing by"
DENIED = "Second component attempted to connect"


def _put(slot: Slot, data: bytes) -> int:
    request = urllib.request.Request(  # noqa: S310 (a loopback test URL)
        slot.put_url,
        data=data,
        method="PUT",
        # urllib would send a form's type otherwise, and the slot says text/plain.
        headers={**slot.headers, "Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status)


def _port(url: str) -> int | None:
    return urlsplit(url).port


def test_standby_takes_over_when_the_active_node_dies(
    prosody: Prosody,
    make_spare_service: Callable[..., HttpUpload],
    connect: Callable[..., XmppClient],
) -> None:
    """The second node stands by quietly, then answers slots soon after a kill -9."""
    key = {"http": {"signing_key": secrets.token_hex(32)}}
    active = make_spare_service(overrides=key)
    standby = make_spare_service(overrides=key)
    active.start(wait_online=True, timeout=20)
    denied_before = prosody.log_path.read_text(errors="replace").count(DENIED)
    standby.start(wait_online=False, timeout=20)
    standby.wait_for_log(STANDING_BY, timeout=10)

    client = connect()
    slot = client.request_slot(active.component_jid, "before.txt", 6, "text/plain")
    assert _port(slot.put_url) == active.http_port
    # Let the standby node ask at least once more: it says so only once.
    poll(
        lambda: _assert(
            prosody.log_path.read_text(errors="replace").count(DENIED)
            >= denied_before + 2
        ),
        timeout=5,
    )
    assert standby.count(STANDING_BY) == 1
    assert standby.count(r"#(error|critical)\]") == 0, standby.log_text()
    assert standby.count(ONLINE_PATTERN) == 0

    assert active.process is not None
    killed = time.monotonic()
    active.process.send_signal(signal.SIGKILL)
    active.process.wait(timeout=10)
    slot = poll(
        lambda: client.request_slot(
            standby.component_jid, "after.txt", 6, "text/plain"
        ),
        timeout=10,
        interval=0.1,
    )
    took_over = time.monotonic() - killed
    print(f"standby answered slot requests {took_over:.2f} s after the kill")
    assert _port(slot.put_url) == standby.http_port
    assert standby.count("taking over") == 1
    assert took_over < 5

    assert _put(slot, b"after!") == 201
    status, _headers, body = download(slot.get_url)
    assert (status, body) == (200, b"after!")


def _assert(condition: bool) -> None:
    assert condition
