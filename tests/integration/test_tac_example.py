"""docs/examples/httpupload.tac as a new user runs it: twistd, a slot, PUT, GET.

The tac runs as shipped under ``twistd -ny`` in a process of its own, in a
fresh folder; only its documented environment variables are set: both ports
0 (twistd logs the ports it got, "... starting on N") and a public URL whose
host stands for a proxy in front (the test sends to the listener itself).
The slot is asked for with docs/examples/request_slot.py, as documented.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.enable_socket]

ROOT = Path(__file__).resolve().parents[2]
TAC = ROOT / "docs" / "examples" / "httpupload.tac"
REQUEST_SLOT = ROOT / "docs" / "examples" / "request_slot.py"
TWISTD = Path(sys.executable).with_name("twistd")
PUBLIC_URL = "http://upload.example.org/upload/"
STARTED = re.compile(r"\] (Site|XMPPComponentServerFactory) starting on (\d+)$")
START_TIMEOUT = 30.0


@dataclass
class RunningTac:
    """The twistd process, the ports it listens on, and its log so far."""

    process: subprocess.Popen[str]
    web_port: int
    component_port: int
    lines: list[str]
    env: dict[str, str]
    reader: threading.Thread
    connections: list[http.client.HTTPConnection] = field(default_factory=list)

    def send(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> http.client.HTTPResponse:
        """``method`` on a public ``url``, sent to the tac's own web listener
        (as a proxy in front would); the response, its body still unread."""
        assert url.startswith(PUBLIC_URL), url
        path = "/upload/" + url[len(PUBLIC_URL) :]
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        connection = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        self.connections.append(connection)
        connection.request(method, path, body=body, headers=sent)
        return connection.getresponse()


def _read_log(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


@pytest.fixture
def tac(tmp_path: Path) -> Iterator[RunningTac]:
    """twistd -ny docs/examples/httpupload.tac in ``tmp_path``, until it listens."""
    env = {
        **os.environ,
        "HTTPUPLOAD_EXAMPLE_WEB_PORT": "0",
        "HTTPUPLOAD_EXAMPLE_COMPONENT_PORT": "0",
        "HTTPUPLOAD_EXAMPLE_PUBLIC_URL": PUBLIC_URL,
    }
    process = subprocess.Popen(
        [str(TWISTD), "-ny", str(TAC), "--pidfile=", "--logfile=-"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_read_log, args=(process, lines), daemon=True)
    reader.start()
    ports: dict[str, int] = {}
    running: RunningTac | None = None
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while len(ports) < 2:
            for line in list(lines):
                found = STARTED.search(line)
                if found:
                    ports[found.group(1)] = int(found.group(2))
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the tac did not start:\n" + "\n".join(lines))
            time.sleep(0.05)
        env["HTTPUPLOAD_EXAMPLE_COMPONENT_PORT"] = str(
            ports["XMPPComponentServerFactory"]
        )
        running = RunningTac(
            process,
            ports["Site"],
            ports["XMPPComponentServerFactory"],
            lines,
            env,
            reader,
        )
        yield running
    finally:
        if running is not None:
            for connection in running.connections:
                connection.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def request_slot(tac: RunningTac, *args: str) -> subprocess.CompletedProcess[str]:
    """docs/examples/request_slot.py against the running tac."""
    return subprocess.run(
        [sys.executable, str(REQUEST_SLOT), *args],
        env=tac.env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_shipped_tac_grants_a_slot_that_takes_a_put_and_serves_it(
    tac: RunningTac, tmp_path: Path
) -> None:
    """As shipped, the tac starts, grants a slot asked through its component
    port, stores the PUT made with the slot's headers, serves it back, stops
    cleanly, and keeps its storage in the folder it was started in."""
    asked = request_slot(tac, "hello.txt", "5", "text/plain")
    assert asked.returncode == 0, asked.stderr + "\n".join(tac.lines)
    slot = json.loads(asked.stdout)
    assert slot["get"].startswith(PUBLIC_URL)
    assert slot["get"].endswith("/hello.txt")
    put = tac.send("PUT", slot["put"], b"hello", slot["headers"], "text/plain")
    assert put.status == 201, put.read()
    put.read()
    get = tac.send("GET", slot["get"])
    assert get.status == 200
    assert get.read() == b"hello"
    assert get.getheader("Content-Type", "").startswith("text/plain")
    # A second PUT to the same slot is refused: a slot is used once.
    again = tac.send("PUT", slot["put"], b"other", slot["headers"], "text/plain")
    assert again.status >= 400
    again.read()
    tac.process.terminate()
    # twistd ends a SIGTERM shutdown by re-raising the signal on itself.
    assert tac.process.wait(timeout=15) in (0, -signal.SIGTERM)
    tac.reader.join(timeout=5)
    assert tac.lines[-1].endswith("Server Shut Down."), tac.lines
    assert (tmp_path / "httpupload-example-storage" / "metadata.sqlite").is_file()
    assert not [line for line in tac.lines if "Traceback" in line], tac.lines


def test_the_shipped_tac_refuses_a_file_over_its_limit(tac: RunningTac) -> None:
    """A slot for a file over the default size limit is refused with a reason,
    through the same documented path."""
    asked = request_slot(tac, "big.bin", str(200 * 1024 * 1024))
    assert asked.returncode == 1, asked.stdout + asked.stderr
    refusal = json.loads(asked.stdout)
    assert refusal["error"] == "not-acceptable"
    assert "File too large" in refusal["text"]
