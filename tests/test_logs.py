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


def test_redact_leaves_no_file_id_whole() -> None:
    """Ids inside keys, paths and URLs are cut to six characters; other text stays."""
    from httpupload.logs import redact, short_id
    from httpupload.slots import new_file_id

    file_id = new_file_id()
    for text in (
        file_id,
        f"uploads/{file_id}",
        f"/srv/files/{file_id[:2]}/{file_id}",
        f"https://upload.example/{file_id}/a.txt",
    ):
        assert file_id not in redact(text)
        assert short_id(file_id) in redact(text)
    digest = "ab" * 32  # a SHA-256: 64 characters, not an id
    assert redact(f"sha256 {digest}") == f"sha256 {digest}"
    assert short_id(file_id) == file_id[:6] + "…"


def test_json_events_carry_no_whole_file_id() -> None:
    """A field holding a whole id (or a key holding one) is cut in the JSON line,
    and the event other observers see keeps its own fields."""
    import io

    from twisted.logger import LogLevel

    from httpupload import logs
    from httpupload.slots import new_file_id

    file_id = new_file_id()
    out = io.StringIO()
    observe = logs.json_observer(out)
    event = {
        "log_format": "Stored {file_id:.6}… as {key}",
        "log_level": LogLevel.info,
        "log_namespace": "test",
        "file_id": file_id,
        "key": f"uploads/{file_id}",
    }
    observe(event)
    line = json.loads(out.getvalue())
    assert file_id not in out.getvalue()
    assert line["file_id"] == file_id[:6] + "…"
    assert event["file_id"] == file_id
