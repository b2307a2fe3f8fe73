"""``httpupload-send`` (httpupload.client.send) and its login (httpupload.client.login).

The pure parts are called directly; the login runs on a ``MemoryReactorClock``
with an injected DNS resolver; the command itself runs once as a process
against a listening socket that never speaks XMPP (the process and its
signals are the point there).
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DomainError
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID

from httpupload.client.arguments import UsageError, parse_server, read_password
from httpupload.client.login import LoginFailed, login, srv_candidates
from httpupload.client.send import ProgressBar, oob_message, render_progress
from httpupload.testing import result_of

Records = list[tuple[int, int, str, int]]


class Resolver(ResolverBase):
    """Answers SRV lookups from a list of (priority, weight, target, port), or
    fails with ``error``; keeps the names asked."""

    def __init__(self, records: Records = (), error: Exception | None = None) -> None:  # type: ignore[assignment]
        super().__init__()
        self.records = list(records)
        self.error = error
        self.asked: list[str] = []

    def _lookup(
        self, name: bytes | str, cls: int, type: int, timeout: Any
    ) -> Deferred[Any]:
        self.asked.append(name.decode() if isinstance(name, bytes) else name)
        if self.error is not None:
            return fail(self.error)
        rows = [
            dns.RRHeader(
                type=dns.SRV, payload=dns.Record_SRV(prio, weight, port, target)
            )
            for prio, weight, target, port in self.records
        ]
        return succeed((rows, [], []))


# ---- finding the server


def test_srv_records_by_priority() -> None:
    """SRV targets are tried by priority, each on its own port."""
    resolver = Resolver(
        [(20, 0, "b.example.org", 5223), (10, 5, "a.example.org", 5222)]
    )
    found = result_of(ensureDeferred(srv_candidates(resolver, "example.org", 1)))
    assert found == [("a.example.org", 5222), ("b.example.org", 5223)]
    assert resolver.asked == ["_xmpp-client._tcp.example.org"]


@pytest.mark.parametrize(
    "resolver",
    [
        Resolver([(0, 0, "", 0)]),
        Resolver([(0, 0, ".", 0)]),
        Resolver(error=DomainError()),
    ],
    ids=["empty-target", "no-service", "lookup-failed"],
)
def test_no_usable_srv_record_means_the_domain(resolver: Resolver) -> None:
    """No service (target "." or empty) or a failed lookup: the domain on 5222."""
    found = result_of(ensureDeferred(srv_candidates(resolver, "example.org", 1)))
    assert found == [("example.org", 5222)]


def test_login_connects_to_each_srv_target_through_the_injected_resolver() -> None:
    """login asks the given resolver, tries each SRV target in turn, and says
    why the last one failed."""
    reactor = MemoryReactorClock()
    resolver = Resolver(
        [(10, 0, "a.example.org", 5299), (20, 0, "b.example.org", 5300)]
    )
    logging_in = ensureDeferred(
        login(reactor, JID("me@example.org"), "pw", resolver=resolver, timeout=5)
    )
    assert resolver.asked == ["_xmpp-client._tcp.example.org"]
    for attempt in range(2):
        _host, port, factory, _timeout, _bind = reactor.tcpClients[attempt]
        assert port == (5299, 5300)[attempt]
        connector = reactor.connectors[attempt]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        reactor.advance(1)  # the endpoint's next attempt is on its clock
    with pytest.raises(LoginFailed, match=r"cannot connect to b\.example\.org:5300"):
        result_of(logging_in)


def test_login_to_a_given_server_asks_no_resolver() -> None:
    """With --server, no SRV lookup is made: the given host and port are used."""
    reactor = MemoryReactorClock()
    resolver = Resolver(error=AssertionError("asked"))
    logging_in = ensureDeferred(
        login(
            reactor, JID("me@example.org"), "pw", server=("xmpp.example.net", 5999),
            resolver=resolver,
        )
    )  # fmt: skip
    assert resolver.asked == []
    assert reactor.tcpClients[0][1] == 5999
    reactor.tcpClients[0][2].clientConnectionFailed(
        reactor.connectors[0], Failure(ConnectionRefusedError())
    )
    reactor.advance(1)
    with pytest.raises(LoginFailed, match="connection refused"):
        result_of(logging_in)


# ---- the command's pure parts


def test_render_progress() -> None:
    """Percentage, bar, bytes in binary units and the rate, on one line."""
    line = render_progress(512 * 1024, 1024 * 1024, 2.0, width=10)
    assert line == " 50% [#####-----] 512.0 KiB / 1.0 MiB 256.0 KiB/s"
    assert render_progress(3, 3, 0.0, width=4) == "100% [####] 3 B / 3 B"


def test_progress_bar_redraws_one_line_at_most_every_interval() -> None:
    """The bar redraws in place, skips draws within the interval, always draws
    the end, and ends its line once."""
    out, now = io.StringIO(), [0.0]
    bar = ProgressBar(out, interval=0.1, clock=lambda: now[0])
    bar(0, 100)
    bar(10, 100)  # too soon: not drawn
    now[0] = 0.5
    bar(50, 100)
    bar(100, 100)  # the end is always drawn
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n") and text.count("\n") == 1
    assert " 50% " in text and "100% " in text and " 10% " not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("xmpp.example.org:5223", ("xmpp.example.org", 5223)),
        ("127.0.0.1", ("127.0.0.1", 5222)),
        ("[::1]:5299", ("::1", 5299)),
        ("[::1]", ("::1", 5222)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, HOST (port 5222) and [IPv6]:PORT are read."""
    assert parse_server(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "host:0",
        "host:99999",
        "host:x",
        ":5222",
        "[::1]x",
        "host:\u0665\u0662\u0662\u0662",  # Arabic-Indic digits
        "host:+5222",
        "host:" + "9" * 5000,
    ],
)
def test_parse_server_refuses(text: str) -> None:
    """A port that is not 1-65535 in ASCII digits is a usage error, said briefly."""
    with pytest.raises(UsageError) as refused:
        parse_server(text)
    assert len(str(refused.value)) < 200


def test_read_password(tmp_path: Path) -> None:
    """The first line without its break; an empty or missing file is a usage error."""
    (tmp_path / "p").write_text("s3cret pass \nsecond line\n")
    assert read_password(str(tmp_path / "p")) == "s3cret pass "
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        read_password(str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="cannot read"):
        read_password(str(tmp_path / "missing"))


def test_oob_message() -> None:
    """A chat message whose body is the URL, carried again as XEP-0066 OOB data."""
    url = "https://upload.example.org/abc/photo%20one.jpg"
    message = oob_message(JID("juliet@example.org"), url)
    assert message["to"] == "juliet@example.org"
    assert message["type"] == "chat"
    assert str(message.body) == url
    oob = next(message.elements("jabber:x:oob", "x"))
    assert str(next(oob.elements("jabber:x:oob", "url"))) == url


# ---- the command, against a server that never speaks

#: Runs the command with Ctrl-C (SIGINT) at Python's default, whatever the
#: test runner inherited: a shell starting a job in the background ignores
#: SIGINT for it, the ignoring is inherited, and an ignored SIGINT never
#: reaches the command (it then waited for --timeout: the old flake).
WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from httpupload.client.send import main; main(sys.argv[1:])"
)


@pytest.mark.enable_socket
def test_command_interrupted_or_timed_out(tmp_path: Path) -> None:
    """Ctrl-C: status 130, "interrupted"; a silent server: 3 after --timeout."""
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "f.txt").write_text("x")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        listener.settimeout(30)
        arguments = [
            "--jid", "a@example.org", "--password-file", str(tmp_path / "pw"),
            "--server", f"127.0.0.1:{listener.getsockname()[1]}",
            str(tmp_path / "f.txt"),
        ]  # fmt: skip
        # A --timeout far beyond the wait below: only the signal ends it.
        command = [sys.executable, "-c", WITH_CTRL_C, *arguments, "--timeout", "600"]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(30)
                connection.recv(1024)  # its stream header: it waits for ours now
                process.send_signal(signal.SIGINT)
                _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 130
        assert err == "httpupload-send: interrupted\n"

        result = subprocess.run(
            [sys.executable, "-m", "httpupload.client.send", *arguments,
             "--timeout", "0.5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        assert result.returncode == 3
        assert result.stderr.startswith("httpupload-send: no login within 0.5 s")
        assert result.stdout == ""
