"""The development venv that scripts/test creates behaves as the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_twistd_finds_the_plugin_from_any_directory(tmp_path: Path) -> None:
    """`twistd httpupload --help` answers with our options outside the checkout too.

    An editable install in setuptools' default mode hides twisted/plugins/ from
    twistd (the plugin system scans sys.path), so this once answered
    "Unknown command: httpupload".
    """
    twistd = Path(sys.executable).with_name("twistd")
    done = subprocess.run(
        [str(twistd), "httpupload", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "httpupload --config FILE" in done.stdout
