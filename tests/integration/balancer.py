"""A real load balancer (Debian's nginx) in front of several HTTP nodes.

Round robin over the nodes, bodies streamed both ways (no request or response
buffering: a PUT reaches a node as it arrives), a node that refuses
connections skipped for the next requests, and an access log that names the
node each request went to, so a test can see both nodes serve.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from prosody import ChildProcess, die_with_parent, free_port, wait_for_port

NGINX = "/usr/sbin/nginx"


def nginx_available() -> bool:
    return Path(NGINX).is_file() or shutil.which("nginx") is not None


@dataclass
class Balancer(ChildProcess):
    upstream_ports: list[int]
    port: int = 0
    base_dir: Path | None = None
    keep: bool = False
    process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False
    )
    _own_dir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def access_log(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "access.log"

    @property
    def error_log(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "error.log"

    def config(self) -> str:
        assert self.base_dir is not None
        d = self.base_dir
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;"
            for p in self.upstream_ports
        )
        return f"""
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format nodes '$request_method $uri $status $upstream_addr';
    access_log {d}/access.log nodes;
    upstream nodes {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{self.port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://nodes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""

    def setup(self) -> Balancer:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="httpupload-nginx-"))
            self._own_dir = True
        self.port = self.port or free_port()
        (self.base_dir / "nginx.conf").write_text(self.config(), encoding="utf-8")
        return self

    def start(self) -> None:
        d = self.base_dir
        assert d is not None
        log = open(d / "stderr.log", "ab")
        try:
            self.process = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(d),
                    "-c",
                    str(d / "nginx.conf"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        wait_for_port(self.port, timeout=15, process=self.process)

    def stop(self, timeout: float = 10.0) -> int | None:
        return self._terminate(timeout)

    def nodes_used(self, method: str) -> list[str]:
        """The upstream address of every logged request of ``method``, in order."""
        if not self.access_log.exists():
            return []
        found = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] == method:
                found.append(parts[-1])
        return found
