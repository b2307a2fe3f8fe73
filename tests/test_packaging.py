"""What the package declares it runs on: dependency floors that carry fixes."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found = (Requirement(text) for text in project["dependencies"])
    return {r.name.lower(): r for r in found}


def test_twisted_floor_excludes_the_dns_decompression_dos() -> None:
    """No Twisted before 26.4 (twisted.names' name-decompression DoS) is admitted."""
    twisted = _requirements()["twisted"]
    assert not twisted.specifier.contains(Version("26.3.0"))
    assert not twisted.specifier.contains(Version("24.7.0"))
    assert twisted.specifier.contains(Version("26.4.0"))
    assert "tls" in twisted.extras


def test_wokkel_is_pinned_to_the_release_the_shim_patches() -> None:
    """The wokkel shim was written for 18.0.0: no other release is admitted."""
    wokkel = _requirements()["wokkel"]
    assert wokkel.specifier.contains(Version("18.0.0"))
    assert not wokkel.specifier.contains(Version("18.0.1"))
    assert not wokkel.specifier.contains(Version("19.0.0"))
