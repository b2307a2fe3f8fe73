"""The servers the benchmark compares, each confined to a temporary folder.

Prosody (twice: stock and with its event loop tuned) and httpupload come from the
test suite's runners in ``tests/integration``; ejabberd and nginx are run here the
same way: own config, own free ports on 127.0.0.1, all state in one folder, the
process a child of ours (SIGTERM if we die), nothing of the packaged services.

ejabberd without ``ejabberdctl``: as root, ``ejabberdctl`` always re-runs itself as
the ``ejabberd`` user through ``su`` and starts an Erlang node that registers with
``epmd``. We run what it would run, ``erl ... -mnesia dir '"SPOOL"' -s ejabberd``,
directly, with ``EJABBERD_CONFIG_PATH`` / ``EJABBERD_LOG_PATH`` in the environment
and no ``-sname``: a node without distribution, so no ``epmd`` and no cookie.
Users are registered through ``mod_http_api`` (``POST /api/register``), allowed from
127.0.0.1 only, instead of ``ejabberdctl register``, which needs distribution.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from prosody import (  # noqa: E402
    Prosody,
    die_with_parent,
    free_port,
    make_self_signed_cert,
    port_open,
    terminate,
    wait_for_port,
)
from twistd import HttpUpload  # noqa: E402

__all__ = [
    "BenchHttpUpload",
    "BenchProsody",
    "Ejabberd",
    "HttpUpload",
    "Nginx",
    "Prosody",
    "ServerError",
    "ShareProsody",
    "free_port",
]

ERL = "/usr/bin/erl"
ERL_LIBS = "/usr/lib/x86_64-linux-gnu"  # where Debian puts ejabberd-23.01/ebin


class ServerError(Exception):
    """A benchmarked server could not be set up or started."""


@dataclass
class BenchHttpUpload(HttpUpload):
    """The test suite's httpupload runner, optionally on another copy of the code.

    ``source``: a folder holding ``httpupload/`` and ``twisted/plugins/`` (e.g. a
    ``git archive`` of a commit), put first on the twistd process's ``PYTHONPATH``
    so that it, not the working tree, is imported.
    """

    source: Path | None = None
    #: The config tables and keys that code knows; others the runner writes are
    #: left out (an older revision refuses a newer runner's tables).
    known_keys: dict[str, list[str]] | None = None

    def config(self) -> dict[str, dict[str, Any]]:
        tables = super().config()
        if self.known_keys is None:
            return tables
        return {
            table: {k: v for k, v in values.items() if k in self.known_keys[table]}
            for table, values in tables.items()
            if table in self.known_keys
        }

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.source), env["PYTHONPATH"]])
        return env


class BenchProsody(Prosody):
    """The test suite's Prosody, logging at Prosody's default level (info).

    The test runner logs everything at debug level, which costs Prosody time on
    every stanza and request; a second ``log = ...`` in ``extra_config`` would be a
    duplicate option, which Prosody 0.12's config loader can crash on.
    """

    def render_config(self) -> str:
        text = super().render_config()
        debug = "log = { debug = "
        if debug not in text:
            raise ServerError("tests/integration/prosody.py: no debug log line found")
        return text.replace(debug, "log = { info = ", 1)


class ShareProsody(BenchProsody):
    """A Prosody whose only upload service is its own mod_http_file_share.

    With no external component, Prosody opens no component port: wait for the c2s
    and HTTP ports only.
    """

    @property
    def ports(self) -> list[int]:
        ports = [self.c2s_port, self.http_port]
        if self.components:
            ports.append(self.component_port)
        return ports


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    terminate(process, timeout)


def _tail(path: Path, limit: int = 4000) -> str:
    if not path.exists():
        return ""
    return path.read_text(encoding="utf-8", errors="replace")[-limit:]


@dataclass
class Ejabberd:
    """ejabberd 23.01 (Debian) with mod_http_upload, in the foreground, as root."""

    domain: str = "localhost"
    upload_jid: str = "upload.localhost"
    users: dict[str, str] = field(default_factory=dict)
    max_size: int = 2 * 1024**3
    base_dir: Path | None = None
    c2s_port: int = 0
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def _dir(self) -> Path:
        if self.base_dir is None:
            raise ServerError("call setup() first")
        return self.base_dir

    @property
    def config_path(self) -> Path:
        return self._dir / "ejabberd.yml"

    @property
    def log_path(self) -> Path:
        return self._dir / "logs" / "ejabberd.log"

    @property
    def console_path(self) -> Path:
        return self._dir / "console.log"

    @property
    def docroot(self) -> Path:
        return self._dir / "upload"

    def setup(self) -> Ejabberd:
        if not Path(ERL).exists():
            raise ServerError(f"{ERL} not found: install the Debian package ejabberd")
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="bench-ejabberd-"))
        for sub in ("spool", "logs", "upload", "certs"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        self.c2s_port = self.c2s_port or free_port()
        self.http_port = self.http_port or free_port()
        cert = self._dir / "certs" / "cert.pem"
        key = self._dir / "certs" / "key.pem"
        make_self_signed_cert(cert, key, [self.domain, f"*.{self.domain}"])
        self.config_path.write_text(self.render_config(cert, key), encoding="utf-8")
        return self

    def render_config(self, cert: Path, key: Path) -> str:
        # JSON is YAML: every string below is quoted safely.
        q = json.dumps
        return f"""\
# written by bench/servers.py
loglevel: info  # as Debian's ejabberd.yml
hosts:
  - {q(self.domain)}
certfiles:
  - {q(str(cert))}
  - {q(str(key))}
acme:
  auto: false
listen:
  -
    port: {self.c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    backlog: 1024
  -
    port: {self.http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    backlog: 1024
    request_handlers:
      /upload: mod_http_upload
      /api: mod_http_api
auth_method: internal
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
api_permissions:
  "benchmark setup":
    who:
      ip: 127.0.0.1/8
    what:
      - register
modules:
  mod_disco: {{}}
  mod_http_api: {{}}
  mod_http_upload:
    host: {q(self.upload_jid)}
    put_url: {q(f"http://127.0.0.1:{self.http_port}/upload")}
    docroot: {q(str(self.docroot))}
    max_size: {self.max_size}
    thumbnail: false
"""

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            EJABBERD_CONFIG_PATH=str(self.config_path),
            EJABBERD_LOG_PATH=str(self.log_path),
            ERL_LIBS=ERL_LIBS,
            ERL_CRASH_DUMP=str(self._dir / "logs" / "erl_crash.dump"),
            ERL_CRASH_DUMP_BYTES="0",
            ERL_MAX_PORTS="32000",
            ERL_MAX_ETS_TABLES="1400",
            HOME=str(self._dir),
        )
        return env

    def command(self) -> list[str]:
        # What `ejabberdctl foreground` runs, minus su, -sname (no epmd) and -detached.
        spool = self._dir / "spool"
        return [
            ERL, "-noinput", "-noshell", "+K", "true", "+P", "250000",
            "-mnesia", "dir", f'"{spool}"', "-s", "ejabberd",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        with open(self.console_path, "ab") as console:
            self.process = subprocess.Popen(  # noqa: S603
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=str(self._dir),
                env=self.environment(),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            for port in (self.c2s_port, self.http_port):
                wait_for_port(port, timeout=timeout, process=self.process)
            for user, password in self.users.items():
                self.register(user, password)
        except Exception as exc:
            self.stop()
            raise ServerError(f"ejabberd: {exc}\n{self.logs()}") from exc

    def register(self, user: str, password: str) -> None:
        body = json.dumps({"user": user, "host": self.domain, "password": password})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/register",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    response.read()
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def pid(self) -> int:
        """The beam.smp process (erl execs erlexec, which execs the emulator)."""
        if self.process is None:
            raise ServerError("not running")
        comm = Path(f"/proc/{self.process.pid}/comm")
        if comm.read_text().strip() != "beam.smp":
            raise ServerError(f"ejabberd's process is {comm.read_text().strip()}")
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process)

    def cleanup(self) -> None:
        self.stop()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def logs(self) -> str:
        return _tail(self.console_path) + "\n" + _tail(self.log_path)


@dataclass
class Nginx:
    """nginx with the dav module taking PUTs to and serving GETs from a folder."""

    base_dir: Path | None = None
    port: int = 0
    workers: str = "auto"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def _dir(self) -> Path:
        if self.base_dir is None:
            raise ServerError("call setup() first")
        return self.base_dir

    @property
    def config_path(self) -> Path:
        return self._dir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self._dir / "error.log"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def setup(self) -> Nginx:
        if shutil.which("nginx") is None:
            raise ServerError("nginx not found: install the Debian package nginx")
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        for sub in ("root/files", "spool/body", "spool/proxy", "spool/fastcgi"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        d = self._dir
        self.config_path.write_text(
            f"""\
# written by bench/servers.py
user root;
worker_processes {self.workers};
daemon off;
pid {d}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {d}/spool/body;
    proxy_temp_path {d}/spool/proxy;
    fastcgi_temp_path {d}/spool/fastcgi;
    uwsgi_temp_path {d}/spool/fastcgi;
    scgi_temp_path {d}/spool/fastcgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        root {d}/root;
        client_max_body_size 0;
        location /files/ {{
            dav_methods PUT;
            dav_access user:rw;
        }}
    }}
}}
""",
            encoding="utf-8",
        )
        return self

    def start(self, timeout: float = 15.0) -> None:
        with open(self._dir / "console.log", "ab") as console:
            self.process = subprocess.Popen(  # noqa: S603
                [
                    "/usr/sbin/nginx", "-c", str(self.config_path),
                    "-p", str(self._dir), "-e", str(self.error_log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        try:
            wait_for_port(self.port, timeout=timeout, process=self.process)
        except Exception as exc:
            self.stop()
            raise ServerError(f"nginx: {exc}\n{_tail(self.error_log)}") from exc

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("not running")
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process)
        deadline = time.monotonic() + 10
        while self.port and port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def cleanup(self) -> None:
        self.stop()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
