"""Run ``twistd -n httpupload --config FILE`` as a child process (tests, demo).

The runner writes the TOML config into a temporary folder, starts the venv's
``twistd`` with ``PYTHONPATH`` set to the repository root (so the plugin file
``twisted/plugins/httpupload_plugin.py`` is found even without an install), sends
everything the process prints to a log file, and can wait for lines in that log,
stop the process (SIGTERM) or kill it.

Nothing here imports Twisted or the httpupload package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Both the test suite and the demo script import this module.
    from .prosody import ChildProcess, die_with_parent, free_port, wait_for_port
except ImportError:  # pragma: no cover - loaded as a top-level module
    from prosody import (  # type: ignore[no-redef]
        ChildProcess,
        die_with_parent,
        free_port,
        wait_for_port,
    )

__all__ = [
    "REPO_ROOT",
    "HttpUpload",
    "HttpUploadError",
    "to_toml",
    "twistd_command",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The line the service logs once the XEP-0114 handshake succeeded.
ONLINE_PATTERN = "component online"


class HttpUploadError(Exception):
    """The httpupload process did not start or did not behave as expected."""


def twistd_command() -> list[str]:
    """Return the argv prefix that runs twistd with this interpreter's environment."""
    # Not resolved: .venv/bin/python is a symlink, and its sibling is the venv's twistd.
    sibling = Path(sys.executable).parent / "twistd"
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value)
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: dict[str, dict[str, Any]]) -> str:
    """Write a mapping of table name -> {key: scalar or list} as TOML text."""
    lines: list[str] = []
    for table, values in config.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


@dataclass
class HttpUpload(ChildProcess):
    """One httpupload service process, with its config, storage and log in a folder."""

    server_port: int
    secret: str
    component_jid: str = "upload.localhost"
    server_host: str = "127.0.0.1"
    domains: list[str] = field(default_factory=lambda: ["localhost"])
    max_file_size: int = 32 * 1024 * 1024
    slot_lifetime: int = 300
    #: Write the secret to a file and point secret_file at it, instead of secret.
    secret_in_file: bool = True
    http_port: int = 0
    base_dir: Path | None = None
    keep: bool = False
    #: Log JSON lines (``--logger httpupload.logs.json_observer``) instead of text.
    json_log: bool = False
    #: Tables/keys merged over the generated config (None as a value drops the key).
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False
    )
    _own_dir: bool = field(default=False, init=False, repr=False)

    # ---- paths

    @property
    def _dir(self) -> Path:
        if self.base_dir is None:
            raise HttpUploadError("call setup() first")
        return self.base_dir

    @property
    def config_path(self) -> Path:
        return self._dir / "httpupload.toml"

    @property
    def log_path(self) -> Path:
        return self._dir / "twistd.log"

    @property
    def storage_path(self) -> Path:
        return self._dir / "files"

    @property
    def secret_path(self) -> Path:
        return self._dir / "component.secret"

    @property
    def pid_path(self) -> Path:
        return self._dir / "twistd.pid"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    # ---- config

    def config(self) -> dict[str, dict[str, Any]]:
        """Return the config tables this runner writes."""
        component: dict[str, Any] = {
            "jid": self.component_jid,
            "server_host": self.server_host,
            "server_port": self.server_port,
        }
        if self.secret_in_file:
            component["secret_file"] = str(self.secret_path)
        else:
            component["secret"] = self.secret
        tables: dict[str, dict[str, Any]] = {
            "component": component,
            "http": {
                "listen": f"tcp:{self.http_port}:interface=127.0.0.1",
                "public_url": self.public_url,
            },
            "storage": {"path": str(self.storage_path)},
            "limits": {
                "max_file_size": self.max_file_size,
                "slot_lifetime": self.slot_lifetime,
            },
            "access": {"domains": list(self.domains)},
            # A free port: several services run side by side in the tests.
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        }
        for table, values in self.overrides.items():
            merged = {**tables.get(table, {}), **values}
            tables[table] = {k: v for k, v in merged.items() if v is not None}
        return tables

    def setup(self) -> HttpUpload:
        """Make the folder, pick the HTTP port, write the config (and secret file)."""
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="httpupload-twistd-"))
            self._own_dir = True
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.storage_path.mkdir(exist_ok=True)
        self.http_port = self.http_port or free_port()
        if self.secret_in_file:
            # A trailing newline, as an editor or `echo` leaves it.
            self.secret_path.write_text(self.secret + "\n", encoding="utf-8")
            self.secret_path.chmod(0o600)
        self.config_path.write_text(to_toml(self.config()), encoding="utf-8")
        return self

    # ---- process

    def command(self) -> list[str]:
        return [
            *twistd_command(),
            "-n",
            "--pidfile",
            str(self.pid_path),
            *(["--logger", "httpupload.logs.json_observer"] if self.json_log else []),
            "httpupload",
            "--config",
            str(self.config_path),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        # Warnings are the unit tests' business, not a reason for the service to die.
        env.pop("PYTHONWARNINGS", None)
        return env

    @property
    def serves_http(self) -> bool:
        """Whether the node listens for HTTP (``[node] roles`` has "http")."""
        roles = self.config().get("node", {}).get("roles", ["component", "http"])
        return "http" in roles

    def start(self, wait_online: bool = True, timeout: float = 30.0) -> None:
        """Start twistd; wait for the HTTP port (if it has one) and, if asked,
        `component online`."""
        if self.running:
            return
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self._dir),
                env=self.environment(),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        try:
            if self.serves_http:
                wait_for_port(self.http_port, timeout=timeout, process=self.process)
            if wait_online:
                self.wait_for_log(ONLINE_PATTERN, timeout=timeout)
        except Exception as exc:
            raise HttpUploadError(
                f"{exc}\n--- twistd log ---\n{self.log_text()}"
            ) from exc

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop twistd with SIGTERM (SIGKILL after timeout); return its exit status."""
        return self._terminate(timeout)

    def kill(self) -> None:
        """Kill twistd at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.stop()

    # ---- log

    def log_text(self) -> str:
        if self.base_dir is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_offset(self) -> int:
        """The current length of the log, to wait for lines written after this point."""
        return len(self.log_text())

    def count(self, pattern: str, since: int = 0) -> int:
        """Count log lines (after offset since) matching a regular expression."""
        regex = re.compile(pattern, re.IGNORECASE)
        return sum(
            1 for line in self.log_text()[since:].splitlines() if regex.search(line)
        )

    def wait_for_log(
        self, pattern: str, timeout: float = 30.0, since: int = 0, count: int = 1
    ) -> None:
        """Wait until count log lines after offset since match pattern (a regex)."""
        deadline = time.monotonic() + timeout
        while self.count(pattern, since) < count:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise HttpUploadError(
                    f"twistd exited ({code}) before logging {pattern!r}"
                )
            if time.monotonic() > deadline:
                raise HttpUploadError(f"twistd did not log {pattern!r} in {timeout} s")
            time.sleep(0.05)
