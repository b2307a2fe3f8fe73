"""End to end: a real client (slixmpp) through a real server (Prosody) to httpupload.

One Prosody and one ``twistd -n httpupload`` serve the whole module (see conftest.py).
The tests are plain synchronous functions: slixmpp runs on an asyncio loop of its own
inside ``XmppClient``, never on pytest-twisted's reactor.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from client import UPLOAD_NS, SlotRefusedError, XmppClient, download, poll
from prosody import Prosody
from twistd import ONLINE_PATTERN, HttpUpload, twistd_command

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
#: How long the service may take to come back after its XMPP server did.
RECONNECT_TIMEOUT = 30.0
#: A line of the service's log that reports a refused component handshake.
HANDSHAKE_ERROR = re.compile(
    r"handshake|not[-_ ]authori[sz]ed|authenticat|secret", re.IGNORECASE
)


def test_service_is_discovered_through_the_users_server(
    client: XmppClient, prosody: Prosody, httpupload: HttpUpload
) -> None:
    """disco#items of the domain lists the component; its disco#info is XEP-0363."""
    assert httpupload.component_jid in client.disco_items(prosody.domain)
    info = client.disco_info(httpupload.component_jid)
    assert ("store", "file") in info.identities
    assert UPLOAD_NS in info.features
    assert info.forms[UPLOAD_NS]["max-file-size"] == [str(httpupload.max_file_size)]
    # slixmpp's own discovery (items, then info of each) agrees.
    assert client.find_upload_service() == httpupload.component_jid


@pytest.mark.parametrize("size", [1, MIB, 20 * MIB], ids=["1B", "1MiB", "20MiB"])
def test_uploaded_file_downloads_byte_for_byte(
    client: XmppClient, httpupload: HttpUpload, size: int
) -> None:
    """A file sent with slixmpp's upload_file comes back identical from its GET URL."""
    data = os.urandom(size)
    get_url = client.upload(f"random-{size}.bin", data, timeout=120)
    assert get_url.startswith(httpupload.public_url)
    status, _headers, body = download(get_url)
    assert status == 200
    assert len(body) == size
    assert body == data


def test_non_ascii_file_name_round_trips(client: XmppClient) -> None:
    """`très cool.jpg` gets a percent-encoded GET URL that serves the same bytes."""
    data = b"\xff\xd8\xff\xe0 not really a jpeg " + os.urandom(64)
    get_url = client.upload("très cool.jpg", data, content_type="image/jpeg")
    assert get_url.endswith("/tr%C3%A8s%20cool.jpg"), get_url
    status, _headers, body = download(get_url)
    assert status == 200
    assert body == data


def test_slot_over_the_limit_is_refused_with_the_limit(
    client: XmppClient, httpupload: HttpUpload
) -> None:
    """One byte over max-file-size gets modify/not-acceptable naming the limit."""
    with pytest.raises(SlotRefusedError) as refused:
        client.request_slot(
            httpupload.component_jid, "too-big.bin", httpupload.max_file_size + 1
        )
    error = refused.value
    assert error.error_type == "modify"
    assert error.condition == "not-acceptable"
    assert "file-too-large" in error.upload_elements
    assert error.max_file_size == httpupload.max_file_size


def test_user_of_another_domain_is_refused(
    outsider: XmppClient, httpupload: HttpUpload
) -> None:
    """A user of a domain outside [access] domains gets auth/forbidden, no slot."""
    with pytest.raises(SlotRefusedError) as refused:
        outsider.request_slot(httpupload.component_jid, "not-mine.txt", 5)
    assert (refused.value.error_type, refused.value.condition) == ("auth", "forbidden")


def test_slot_takes_a_put_with_its_headers(
    client: XmppClient, httpupload: HttpUpload
) -> None:
    """A slot from request_slot takes a PUT with its headers (201), then serves it."""
    slot = client.request_slot(httpupload.component_jid, "exact.txt", 5, "text/plain")
    request = urllib.request.Request(  # noqa: S310 - our own http:// URL
        slot.put_url,
        data=b"hello",
        method="PUT",
        headers={"Content-Type": "text/plain", **slot.headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 201
    assert download(slot.get_url)[::2] == (200, b"hello")


def test_bad_config_exits_with_a_line_naming_the_key(tmp_path: Path) -> None:
    """An unknown key makes twistd exit non-zero and name the key, no traceback."""
    service = HttpUpload(server_port=5347, secret="x", base_dir=tmp_path)
    service.overrides = {"limits": {"max_file_sise": 10}}
    service.setup()
    result = subprocess.run(
        [*twistd_command(), "-n", "httpupload", "--config", str(service.config_path)],
        cwd=tmp_path,
        env=service.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    naming = [line for line in output.splitlines() if "max_file_sise" in line]
    assert len(naming) == 1, output


def test_wrong_component_secret_is_reported_and_retried(
    prosody: Prosody,
    httpupload: HttpUpload,
    client: XmppClient,
    make_service: Callable[..., HttpUpload],
) -> None:
    """A wrong secret logs a clear handshake error per attempt and keeps retrying."""

    def refused() -> int:
        log = prosody.log_path.read_text(encoding="utf-8", errors="replace")
        return log.count(
            f"Component authentication failed for {httpupload.component_jid}"
        )

    before = refused()
    wrong = make_service(secret="not-the-" + httpupload.secret, secret_in_file=False)
    wrong.start(wait_online=False)

    def retried_three_times() -> None:
        assert refused() - before >= 3, wrong.log_text()

    # Three handshakes refused by Prosody: the service retries, with back-off.
    poll(retried_three_times, timeout=45)
    assert wrong.running, wrong.log_text()
    log = wrong.log_text()
    errors = [line for line in log.splitlines() if HANDSHAKE_ERROR.search(line)]
    assert errors, log
    # One clear line per refused handshake: no traceback, no cascade.
    assert len(errors) <= refused() - before + 1, log
    assert "Traceback" not in log, log
    assert ONLINE_PATTERN not in log, log
    # The real component, same JID, was not disturbed.
    client.request_slot(httpupload.component_jid, "still-here.txt", 3, "text/plain")


def test_component_reconnects_after_prosody_restarts(
    prosody: Prosody,
    httpupload: HttpUpload,
    connect: Callable[..., XmppClient],
) -> None:
    """After Prosody restarts, the service reconnects and hands out working slots."""
    first = connect()
    before_url = first.upload("before-restart.txt", b"still served")
    first.close()
    offset = httpupload.log_offset()

    prosody.restart()
    httpupload.wait_for_log(ONLINE_PATTERN, timeout=RECONNECT_TIMEOUT, since=offset)
    assert httpupload.running

    def upload_after_restart() -> str:
        session = connect(timeout=10)
        try:
            return session.upload("after-restart.txt", b"back again")
        finally:
            session.close()

    after_url = poll(upload_after_restart, timeout=RECONNECT_TIMEOUT, interval=0.5)
    assert download(after_url)[::2] == (200, b"back again")
    assert download(before_url)[::2] == (200, b"still served")


@pytest.mark.parametrize(
    "namespace", ["urn:xmpp:http:upload", "eu:siacs:conversations:http:upload"]
)
def test_legacy_namespace_slot_and_headerless_put(
    client: XmppClient, httpupload: HttpUpload, namespace: str
) -> None:
    """A 0.2 / Conversations slot through Prosody; its PUT URL needs no header."""
    reply = client.raw_iq(
        httpupload.component_jid,
        f"<request xmlns='{namespace}'><filename>old client.txt</filename>"
        "<size>9</size><content-type>text/plain</content-type></request>",
    )
    slot = reply.find(f"{{{namespace}}}slot")
    assert slot is not None, ET.tostring(reply)
    put_url = slot.findtext(f"{{{namespace}}}put")
    get_url = slot.findtext(f"{{{namespace}}}get")
    assert put_url and get_url and get_url.endswith("/old%20client.txt")
    request = urllib.request.Request(  # noqa: S310 - our own http:// URL
        put_url, data=b"legacy ok", method="PUT", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 201
    assert download(get_url)[::2] == (200, b"legacy ok")

    too_big = client.raw_iq(
        httpupload.component_jid,
        f"<request xmlns='{namespace}'><filename>big</filename>"
        f"<size>{httpupload.max_file_size + 1}</size></request>",
    )
    assert too_big.get("type") == "error"
    error = too_big.find("{jabber:client}error")
    assert error is not None
    assert error.find(f"{{{namespace}}}file-too-large") is not None
