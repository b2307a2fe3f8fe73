"""JSON logs for shippers, through twistd's --logger option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")


def test_json_logs_from_twistd(tmp_path: Path) -> None:
    """Every line is a JSON event; no secret or signing key appears."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[component]\njid = "upload.localhost"\nsecret = "topsecret"\n'
        "server_port = 1\n"
        '[http]\nlisten = "tcp:0:interface=127.0.0.1"\n'
        'public_url = "https://upload.localhost/"\n'
        '[storage]\npath = "store"\n[metrics]\nlisten = ""\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "--logger",
            "httpupload.logs.json_observer",
            "httpupload",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.append(raw.decode())
            if "Reconnecting" in raw.decode():
                break
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    events = [json.loads(line) for line in lines if line.strip()]
    assert events, lines
    assert all("log_level" in e for e in events)
    assert any(
        "Cannot reach the XMPP server" in e.get("log_format", "") for e in events
    )
    text = "".join(lines)
    key = (tmp_path / "store" / "signing.key").read_text().strip()
    assert "topsecret" not in text and key not in text
