"""The client API and ``httpupload-send`` against real servers.

The API (``httpupload.client`` over a wokkel client stream that
``httpupload.client.login.login`` opens with STARTTLS and SASL) runs in-process against
the session's Prosody and httpupload, and against Prosody's own
``mod_http_file_share`` on a second Prosody of this module (on the session's,
clients would find two upload services). The command runs as a subprocess;
its message is received by a slixmpp client.
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from client import XmppClient, download
from prosody import Prosody
from twistd import REPO_ROOT, HttpUpload
from twisted.internet import reactor
from twisted.words.protocols.jabber.jid import JID

from httpupload.client import (
    FileTooLarge,
    HttpError,
    UploadClient,
    UploadService,
)
from httpupload.client.login import XmppSession, login

pytestmark = pytest.mark.integration

NS_OOB = "jabber:x:oob"
#: As in conftest.py (the session's Prosody and service).
DOMAIN, USER = "localhost", "alice"
SHARE_JID = "share.localhost"
SHARE_LIMIT = 1024 * 1024
BOB, BOB_PASSWORD = "bob", "bob-password-for-client-tests"
SHARE_PASSWORD = "alice-password-on-the-share-server"


# ---- fixtures


@pytest.fixture(scope="module")
def share_prosody() -> Iterator[Prosody]:
    """A second Prosody running only its own mod_http_file_share."""
    server = Prosody(
        domain=DOMAIN,
        # Not a subdomain of DOMAIN, so not in its disco#items; the fixture
        # waits for the component port, which Prosody opens only with one.
        components={"unused-component.test": "unused-secret"},
        users={USER: SHARE_PASSWORD},
        share_component=SHARE_JID,
        share_size_limit=SHARE_LIMIT,
        # Without it Prosody answers the PUT with "404 Unknown host: 127.0.0.1".
        extra_config=f'http_default_host = "{SHARE_JID}"',
    )
    try:
        server.__enter__()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def bob(prosody: Prosody) -> str:
    """A second account on the session's Prosody, to receive messages."""
    return prosody.register(BOB, BOB_PASSWORD)


async def _login(server: Prosody) -> XmppSession:
    return await login(
        reactor,
        JID(f"{USER}@{DOMAIN}/api-test"),
        server.users[USER],
        server=("127.0.0.1", server.c2s_port),
        insecure_tls=True,
        timeout=20,
    )


@pytest_twisted.async_yield_fixture
async def session(prosody: Prosody, httpupload: HttpUpload) -> AsyncIterator[Any]:
    """alice logged in with the Twisted client (STARTTLS, SASL)."""
    logged_in = await _login(prosody)
    yield logged_in
    await logged_in.close()


@pytest_twisted.async_yield_fixture
async def share_session(share_prosody: Prosody) -> AsyncIterator[Any]:
    logged_in = await _login(share_prosody)
    yield logged_in
    await logged_in.close()


async def fetch(url: str) -> tuple[int, bytes]:
    response = await treq.get(url, persistent=False)
    return response.code, await response.content()


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        file.truncate(size)
    return path


# ---- the API against httpupload


@pytest_twisted.ensureDeferred
async def test_api_uploads_to_httpupload(
    session: XmppSession, httpupload: HttpUpload, tmp_path: Path
) -> None:
    """Discovery through Prosody, a slot, a streamed PUT; the URL serves it."""
    uploader = UploadClient(reactor, session.manager)
    service = await uploader.discover(DOMAIN)
    assert service == UploadService(
        JID(httpupload.component_jid), httpupload.max_file_size
    )
    data = os.urandom(2 * 1024 * 1024 + 7)
    path = tmp_path / "two megs.bin"
    path.write_bytes(data)
    seen: list[int] = []
    url = await uploader.upload(
        path, domain=DOMAIN, progress=lambda sent, total: seen.append(sent)
    )
    assert url.startswith(httpupload.public_url)
    assert url.endswith("/two%20megs.bin")
    assert seen[0] == 0 and seen[-1] == len(data) and len(seen) > 10
    assert await fetch(url) == (200, data)


@pytest_twisted.ensureDeferred
async def test_api_refusals_from_httpupload(
    session: XmppSession, httpupload: HttpUpload, tmp_path: Path
) -> None:
    """Too large (early, then from the service), and an HTTP refusal."""
    uploader = UploadClient(reactor, session.manager)
    limit = httpupload.max_file_size
    big = sparse_file(tmp_path / "big.bin", limit + 1)
    with pytest.raises(FileTooLarge) as early:
        await uploader.upload(big, domain=DOMAIN)
    assert early.value.refused is None
    assert early.value.max_file_size == limit

    # Naming the service skips discovery: the service refuses it itself.
    with pytest.raises(FileTooLarge) as late:
        await uploader.upload(big, service=httpupload.component_jid)
    refused = late.value.refused
    assert refused is not None
    assert (refused.error_type, refused.condition) == ("modify", "not-acceptable")
    assert str(limit) in (refused.server_text or "")

    path = tmp_path / "once.txt"
    path.write_bytes(b"only once")
    slot = await uploader.request_slot(
        httpupload.component_jid, "once.txt", 9, "text/plain"
    )
    with open(path, "rb") as file:
        await uploader.put(slot, file)
    # The same bytes again (a retry after a lost answer): success (#12).
    with open(path, "rb") as file:
        await uploader.put(slot, file)
    other = tmp_path / "other.txt"
    other.write_bytes(b"not once!")
    with open(other, "rb") as file, pytest.raises(HttpError) as conflict:
        await uploader.put(slot, file)
    assert conflict.value.status == 409
    assert conflict.value.body.strip() in str(conflict.value)


# ---- the API against Prosody's mod_http_file_share


@pytest_twisted.ensureDeferred
async def test_api_against_prosody_http_file_share(
    share_session: XmppSession, share_prosody: Prosody, tmp_path: Path
) -> None:
    """The same client works with another implementation, refusals included."""
    uploader = UploadClient(reactor, share_session.manager)
    service = await uploader.discover(DOMAIN)
    assert service == UploadService(JID(SHARE_JID), SHARE_LIMIT)

    data = os.urandom(300 * 1024)
    path = tmp_path / "très cool.jpg"
    path.write_bytes(data)
    seen: list[int] = []
    url = await uploader.upload(
        path, domain=DOMAIN, progress=lambda sent, total: seen.append(sent)
    )
    assert url.startswith(f"http://127.0.0.1:{share_prosody.http_port}/")
    assert seen[-1] == len(data)
    assert await fetch(url) == (200, data)

    big = sparse_file(tmp_path / "big.bin", SHARE_LIMIT + 1)
    with pytest.raises(FileTooLarge) as early:
        await uploader.upload(big, domain=DOMAIN)
    assert early.value.refused is None

    # Asked anyway, Prosody refuses it with <file-too-large/> and its limit.
    with pytest.raises(FileTooLarge) as late:
        await uploader.request_slot(SHARE_JID, "big.bin", SHARE_LIMIT + 1)
    assert late.value.max_file_size == SHARE_LIMIT
    assert late.value.refused is not None
    assert late.value.refused.condition == "not-acceptable"
    assert late.value.refused.server_text, late.value

    slot = await uploader.request_slot(SHARE_JID, "once.txt", 4, "text/plain")
    once = tmp_path / "once.txt"
    once.write_bytes(b"once")
    with open(once, "rb") as file:
        await uploader.put(slot, file)
    with open(once, "rb") as file, pytest.raises(HttpError) as again:
        await uploader.put(slot, file)
    assert 400 <= again.value.status < 500, again.value


# ---- the command


def send_command(prosody: Prosody, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "httpupload.client.send",
        "--jid", f"{USER}@{DOMAIN}",
        "--server", f"127.0.0.1:{prosody.c2s_port}",
        "--insecure-tls",
        *args,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    root = str(REPO_ROOT)
    return {**os.environ, "PYTHONPATH": f"{root}:{path}" if path else root}


def run_on_a_terminal(command: list[str]) -> tuple[int, str, str]:
    """Run command with stderr on a pseudo-terminal; status, stdout, stderr."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            env=environment(),
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return (
        process.returncode,
        process.stdout.decode(),
        b"".join(chunks).decode(errors="replace"),
    )


class Inbox:
    """A slixmpp session that announces itself and keeps the messages it gets."""

    def __init__(self, session: XmppClient) -> None:
        self.session = session
        self.messages: list[Any] = []
        self._arrived = asyncio.Event()
        session.xmpp.add_event_handler("message", self._on_message)
        session.xmpp.send_presence()
        # A round trip: the server has seen the presence once this returns.
        session.disco_items(DOMAIN)

    def _on_message(self, message: Any) -> None:
        self.messages.append(message)
        self._arrived.set()

    def wait(self, timeout: float = 15.0) -> Any:
        async def first() -> Any:
            await self._arrived.wait()
            return self.messages[0]

        return self.session.run(first(), timeout=timeout)


def test_command_uploads_and_sends_the_url_with_oob_data(
    prosody: Prosody,
    httpupload: HttpUpload,
    bob: str,
    connect: Callable[..., XmppClient],
    tmp_path: Path,
) -> None:
    """Progress on a terminal, the URL on stdout, an OOB message that arrives."""
    inbox = Inbox(connect(jid=bob, password=BOB_PASSWORD))
    (tmp_path / "password").write_text(prosody.users[USER] + "\n")
    data = os.urandom(1024 * 1024)
    (tmp_path / "report.pdf").write_bytes(data)
    arguments = ["--password-file", str(tmp_path / "password"), "--to", bob]
    status, out, err = run_on_a_terminal(
        send_command(prosody, *arguments, str(tmp_path / "report.pdf"))
    )
    assert status == 0, err
    url = out.strip()
    assert out == url + "\n"
    assert url.startswith(httpupload.public_url) and url.endswith("/report.pdf")
    assert "100% [" in err and "1.0 MiB / 1.0 MiB" in err, err

    message = inbox.wait()
    assert message["type"] == "chat"
    assert message["from"].bare == f"{USER}@{DOMAIN}"
    assert message["body"] == url
    oob = message.xml.find(f"{{{NS_OOB}}}x/{{{NS_OOB}}}url")
    assert oob is not None and oob.text == url

    assert download(url)[::2] == (200, data)


def test_command_failures_are_one_line_with_their_status(
    prosody: Prosody, httpupload: HttpUpload, tmp_path: Path
) -> None:
    """3: login refused; 1: over the service's limit; 2: no such file."""
    (tmp_path / "wrong").write_text("not-the-password\n")
    (tmp_path / "right").write_text(prosody.users[USER] + "\n")
    big = sparse_file(tmp_path / "big.iso", httpupload.max_file_size + 1)
    cases = [
        (["--password-file", str(tmp_path / "wrong"), str(big)], 3, "not-authorized"),
        (["--password-file", str(tmp_path / "right"), str(big)], 1, "at most"),
        (["--password-file", str(tmp_path / "right"), "missing.bin"], 2, "no such"),
    ]
    for args, expected, words in cases:
        result = subprocess.run(
            send_command(prosody, *args),
            capture_output=True,
            text=True,
            env=environment(),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert result.returncode == expected, result.stderr
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("httpupload-send: ") and words in lines[0]
