"""Run a throw-away Prosody for end-to-end tests and the demo.

Everything the server needs lives in one temporary folder: its config, a self-signed
certificate (made with the ``openssl`` command-line tool), its data, pidfile and log.
It listens on 127.0.0.1 only, on ports picked free at run time, and can be stopped and
started again on the same ports (to test that a component reconnects).

Nothing here imports Twisted or the httpupload package: the demo script reuses it.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

__all__ = [
    "Prosody",
    "ProsodyError",
    "die_with_parent",
    "free_port",
    "wait_for_port",
]


PR_SET_PDEATHSIG = 1


class ProsodyError(Exception):
    """Prosody could not be set up, started or stopped."""


def _find_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Looked up here, in the parent: the child of a fork must not dlopen anything.
_PRCTL = _find_prctl()


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, even by SIGKILL.

    A ``preexec_fn`` for servers started in their own session, so that a killed
    test run or demo leaves no server behind. Linux only; elsewhere a no-op.
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    timeout: float = 15.0,
    host: str = "127.0.0.1",
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until host:port accepts connections; fail early if process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        if process is not None and process.poll() is not None:
            raise ProsodyError(
                f"process exited with {process.returncode} before {host}:{port} opened"
            )
        time.sleep(0.05)
    raise ProsodyError(f"nothing listens on {host}:{port} after {timeout} s")


def _lua_string(value: str) -> str:
    """Quote a Python string as a Lua string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def make_self_signed_cert(cert_path: Path, key_path: Path, names: list[str]) -> None:
    """Write a self-signed RSA certificate and key for names, with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ProsodyError("the openssl command is needed to make a test certificate")
    san = ",".join(f"DNS:{name}" for name in names)
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key_path), "-out", str(cert_path),
            "-days", "7", "-subj", f"/CN={names[0]}",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    key_path.chmod(0o600)


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit status, if it ran."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode


class ChildProcess:
    """What the runners of child servers share: stopping, cleaning up, ``with``.

    A runner sets ``process``, ``base_dir``, ``keep`` and ``_own_dir`` and
    defines ``setup()``, ``start()`` and ``stop()`` (which calls ``_terminate``).
    """

    process: subprocess.Popen[bytes] | None
    base_dir: Path | None
    keep: bool
    _own_dir: bool

    def setup(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> object:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _terminate(self, timeout: float) -> int | None:
        """Forget the process and terminate it; its exit status, if it ran."""
        process, self.process = self.process, None
        return terminate(process, timeout)

    def cleanup(self) -> None:
        """Stop the process and remove its folder (unless keep is set)."""
        self.stop()
        if self._own_dir and not self.keep and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.setup()
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


@dataclass
class Prosody(ChildProcess):
    """A Prosody server confined to a temporary folder.

    Use ``setup()`` once (config, certificate, users), then ``start()`` /
    ``stop()`` / ``restart()`` as needed, and ``cleanup()`` at the end (stops it and
    removes the folder unless ``keep`` is true). As a context manager: setup and
    start, then cleanup.
    """

    domain: str = "localhost"
    components: dict[str, str] = field(
        default_factory=lambda: {"upload.localhost": "s3cret"}
    )
    users: dict[str, str] = field(default_factory=lambda: {"alice": "alice-password"})
    #: More VirtualHosts (no components): users there are on the same server, but
    #: not of ``domain``. Register them with ``register(user, password, host)``.
    extra_hosts: list[str] = field(default_factory=list)
    base_dir: Path | None = None
    keep: bool = False
    extra_config: str = ""
    #: If set, also run Prosody's own XEP-0363 service under this JID (the peer we
    #: compare with). Off by default: clients would find two upload services.
    share_component: str | None = None
    share_size_limit: int = 100 * 1024 * 1024
    #: More Prosody modules to load, e.g. ``["blocklist"]`` (Converse.js 14 hangs
    #: opening a chat with a non-contact without it) or ``["bosh"]``.
    extra_modules: list[str] = field(default_factory=list)
    #: Serve XEP-0156 WebSocket (``mod_websocket``) at ``websocket_url``, plain
    #: ``ws://`` on 127.0.0.1 taken as secure (for browser clients in tests only).
    websocket: bool = False
    prosody_bin: str = "prosody"
    prosodyctl_bin: str = "prosodyctl"
    c2s_port: int = 0
    component_port: int = 0
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False
    )
    _own_dir: bool = field(default=False, init=False, repr=False)

    # ---- paths

    @property
    def config_path(self) -> Path:
        return self._dir / "prosody.cfg.lua"

    @property
    def log_path(self) -> Path:
        return self._dir / "prosody.log"

    @property
    def console_path(self) -> Path:
        return self._dir / "prosody.console.log"

    @property
    def pid_path(self) -> Path:
        return self._dir / "prosody.pid"

    @property
    def data_path(self) -> Path:
        return self._dir / "data"

    @property
    def cert_path(self) -> Path:
        return self._dir / "certs" / f"{self.domain}.crt"

    @property
    def key_path(self) -> Path:
        return self._dir / "certs" / f"{self.domain}.key"

    @property
    def _dir(self) -> Path:
        if self.base_dir is None:
            raise ProsodyError("call setup() first")
        return self.base_dir

    # ---- lifecycle

    def setup(self) -> Prosody:
        """Make the folder, pick ports, write the certificate and config, add users."""
        for tool in (self.prosody_bin, self.prosodyctl_bin):
            if shutil.which(tool) is None:
                raise ProsodyError(
                    f"{tool} not found: install the Debian package prosody"
                )
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="httpupload-prosody-"))
            self._own_dir = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_path.mkdir(exist_ok=True)
        self.cert_path.parent.mkdir(exist_ok=True)
        # The ports are chosen once; restarts reuse them.
        self.c2s_port = self.c2s_port or free_port()
        self.component_port = self.component_port or free_port()
        self.http_port = self.http_port or free_port()
        names = [self.domain, f"*.{self.domain}", *self.extra_hosts]
        make_self_signed_cert(self.cert_path, self.key_path, names)
        self.config_path.write_text(self.render_config(), encoding="utf-8")
        for user, password in self.users.items():
            self.register(user, password)
        return self

    def render_config(self) -> str:
        """Return the Lua config text for this server."""
        q = _lua_string
        lines = [
            "-- written by tests/integration/prosody.py",
            "run_as_root = true",
            "daemonize = false",
            f"pidfile = {q(str(self.pid_path))}",
            f"data_path = {q(str(self.data_path))}",
            f"certificates = {q(str(self.cert_path.parent))}",
            f"log = {{ debug = {q(str(self.log_path))}; }}",
            'interfaces = { "127.0.0.1" }',
            'local_interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.c2s_port} }}",
            "c2s_direct_tls_ports = { }",
            "legacy_ssl_ports = { }",
            'component_interfaces = { "127.0.0.1" }',
            f"component_ports = {{ {self.component_port} }}",
            'http_interfaces = { "127.0.0.1" }',
            f"http_ports = {{ {self.http_port} }}",
            "https_ports = { }",
            "s2s_ports = { }",
            "modules_enabled = {",
            '  "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix";',
            *(f"  {q(name)};" for name in self.modules),
            "}",
            # s2s is loaded automatically otherwise; mod_limits is deliberately absent.
            'modules_disabled = { "s2s"; "dialback"; "s2s_bidi" }',
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "allow_registration = false",
            "c2s_require_encryption = true",
            "s2s_require_encryption = true",
            f"ssl = {{ certificate = {q(str(self.cert_path))};"
            f" key = {q(str(self.key_path))}; }}",
            *self._http_config(),
            self.extra_config,
            "",
            f"VirtualHost {q(self.domain)}",
            "",
        ]
        for host in self.extra_hosts:
            lines += [f"VirtualHost {q(host)}", ""]
        for jid, secret in self.components.items():
            lines += [f"Component {q(jid)}", f"  component_secret = {q(secret)}", ""]
        if self.share_component:
            lines += [
                f'Component {q(self.share_component)} "http_file_share"',
                f"  http_file_share_size_limit = {self.share_size_limit}",
                f"  http_file_share_daily_quota = {self.share_size_limit * 1000}",
                f"  http_external_url = {q(f'http://127.0.0.1:{self.http_port}/')}",
                "",
            ]
        return "\n".join(lines)

    @property
    def modules(self) -> list[str]:
        """The modules loaded on top of the fixed set."""
        extra = list(self.extra_modules)
        if self.websocket and "websocket" not in extra:
            extra.append("websocket")
        return extra

    @property
    def serves_http(self) -> bool:
        """Whether Prosody opens its HTTP port (some module of it uses mod_http)."""
        return bool(self.share_component or {"websocket", "bosh"} & set(self.modules))

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/xmpp-websocket"

    @property
    def bosh_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/http-bind"

    def _http_config(self) -> list[str]:
        if not self.websocket:
            return []
        # A browser asks for ws://127.0.0.1:PORT: route that to the VirtualHost.
        return [
            "consider_websocket_secure = true",
            f"http_default_host = {_lua_string(self.domain)}",
        ]

    def register(self, user: str, password: str, host: str | None = None) -> str:
        """Create an account with prosodyctl (server up or not); return its JID."""
        host = host or self.domain
        result = subprocess.run(
            [
                self.prosodyctl_bin, "--config", str(self.config_path),
                "register", user, host, password,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise ProsodyError(
                f"prosodyctl register {user}@{host} failed "
                f"({result.returncode}): {result.stdout.decode(errors='replace')}"
            )
        if host == self.domain:
            self.users[user] = password
        return f"{user}@{host}"

    def start(self, timeout: float = 20.0) -> None:
        """Start prosody in the foreground as a child process and wait for its ports."""
        if self.running:
            return
        console = open(self.console_path, "ab")
        try:
            self.process = subprocess.Popen(
                [self.prosody_bin, "--config", str(self.config_path), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=str(self._dir),
                start_new_session=True,  # Ctrl-C in a terminal goes to us, not it
                preexec_fn=die_with_parent,
            )
        finally:
            console.close()
        try:
            for port in self.ports:
                wait_for_port(port, timeout=timeout, process=self.process)
        except ProsodyError as exc:
            self.stop()
            raise ProsodyError(f"{exc}\n--- prosody output ---\n{self.logs()}") from exc

    @property
    def ports(self) -> list[int]:
        """The ports this server opens (HTTP only when something uses mod_http)."""
        ports = [self.c2s_port, self.component_port]
        if self.serves_http:
            ports.append(self.http_port)
        return ports

    def stop(self, timeout: float = 10.0) -> None:
        """Stop prosody (SIGTERM, then SIGKILL) and wait until its ports are free."""
        if self._terminate(timeout) is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            port_open(port) for port in self.ports
        ):
            time.sleep(0.05)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop and start the same server on the same ports."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def logs(self, limit: int = 20000) -> str:
        """Return the tail of Prosody's log and console output, for failure reports."""
        parts = []
        for path in (self.console_path, self.log_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace")
                parts.append(f"==> {path} <==\n{text[-limit:]}")
        return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover - manual check
    with Prosody() as server:
        print(f"prosody up: c2s {server.c2s_port}, component {server.component_port}")
        print(f"config {server.config_path}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
