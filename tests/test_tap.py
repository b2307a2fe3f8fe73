"""``twistd httpupload`` as an operator runs it: plugin listed, bad configs stop it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from httpupload.tap import Options

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [str(Path(sys.executable).parent / "twistd")]


def twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*TWISTD, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(
        '[component]\njid = "upload.localhost"\nsecret = "topsecret"\n'
        '[http]\nlisten = "tcp:0:interface=127.0.0.1"\n'
        'public_url = "https://upload.localhost/"\n'
        f'[storage]\npath = "store"\n{extra}'
    )
    return path


def test_plugin_is_listed(tmp_path: Path) -> None:
    """``twistd --help`` lists the httpupload command."""
    result = twistd("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "httpupload" in result.stdout


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[limits]\nmax_filesize = 10\n", "[limits] max_filesize: unknown key"),
        (
            "[limits]\nmax_file_size = -1\n",
            "[limits] max_file_size: must be a positive",
        ),
    ],
)
def test_bad_config_stops_twistd_with_one_line(
    tmp_path: Path, extra: str, expected: str
) -> None:
    """A bad value: non-zero exit, one line naming the key, no secret, nothing made."""
    config = write_config(tmp_path / "c.toml", extra)
    result = twistd(
        "-n", "--pidfile=", "httpupload", "--config", str(config), cwd=tmp_path
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert len(output.splitlines()) == 1
    assert output.startswith(f"httpupload: config error: {expected}")
    assert "topsecret" not in output
    assert not (tmp_path / "store").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    """A config path that does not exist is reported in one line."""
    result = twistd(
        "-n", "--pidfile=", "httpupload", "--config", "nope.toml", cwd=tmp_path
    )
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1
    assert "nope.toml" in lines[0]


def test_unusable_storage_path(tmp_path: Path) -> None:
    """A storage path that cannot be a folder is named as [storage] path."""
    (tmp_path / "store").write_text("a file, not a folder")
    config = write_config(tmp_path / "c.toml")
    result = twistd(
        "-n", "--pidfile=", "httpupload", "--config", str(config), cwd=tmp_path
    )
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1
    assert "[storage] path" in lines[0]


def test_options_require_config() -> None:
    """Without --config the options refuse to parse."""
    with pytest.raises(SystemExit, match="--config"):
        Options().parseOptions([])


def test_wheel_ships_the_plugin(tmp_path: Path) -> None:
    """An installed wheel carries twisted/plugins/httpupload_plugin.py, every
    module and the metadata stores' SQL (package data)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("httpupload-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/httpupload_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/__init__.py" not in names
    shipped = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "httpupload").rglob("*.py")
    }
    shipped |= {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "httpupload").rglob("*.sql")
    }
    assert shipped <= set(names), shipped - set(names)
    assert "httpupload/metadata/sqlite.sql" in shipped
    assert "httpupload/py.typed" in names


def test_make_service_builds_the_tree_on_the_running_reactor(tmp_path: Path) -> None:
    """makeService hands the config and the global reactor (checked to be a
    service reactor) to make_service, and nothing listens before twistd starts it."""
    from httpupload.service import HttpUploadService
    from httpupload.tap import makeService

    options = Options()
    options.parseOptions(["--config", str(write_config(tmp_path / "c.toml"))])
    service = makeService(options)
    assert isinstance(service, HttpUploadService)
    assert service.names()[:2] == ["backends", "expiry"]
    assert not service.running
