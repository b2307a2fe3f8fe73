"""The shim that lets wokkel 18.0.0 import on current Twisted.

Each check runs in a fresh interpreter: this test process imported
``httpupload`` (and so the shim) long before any test ran, so only a new
process shows what the shim's load order and absence do.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# As the suite's own filter: wokkel reads names compat deprecates.
WARNINGS = ["-W", "error", "-W", "ignore:twisted.python.compat.:DeprecationWarning"]
# wokkel modules that need one of the shim's names (muc: the constants alias;
# disco and data_form: _PY3), and all that httpupload imports.
NEEDS_THE_SHIM = ("wokkel.disco", "wokkel.data_form", "wokkel.muc")
WOKKEL_MODULES = (*NEEDS_THE_SHIM, "wokkel.component", "wokkel.generic", "wokkel.ping")


def fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter, warnings as errors."""
    return subprocess.run(
        [sys.executable, *WARNINGS, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", NEEDS_THE_SHIM)
def test_wokkel_does_not_import_without_the_shim(module: str) -> None:
    """On this Twisted, wokkel fails to import when nothing installed the
    shim: the shim is still needed (remove it once this test fails)."""
    result = fresh(f"import {module}")
    assert result.returncode != 0
    assert "_PY3" in result.stderr or "twisted.python.constants" in result.stderr


@pytest.mark.parametrize("module", WOKKEL_MODULES)
def test_importing_the_package_first_makes_wokkel_importable(module: str) -> None:
    """``import httpupload`` alone, then any wokkel module imports cleanly."""
    result = fresh(f"import httpupload\nimport {module}")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "entry",
    ["httpupload.xmpp.handler", "httpupload.assembly", "httpupload.service"],
)
def test_any_module_that_uses_wokkel_can_be_imported_first(entry: str) -> None:
    """Importing a module of ours that imports wokkel, as the first thing a
    program does, works: the package applies the shim before the module runs."""
    result = fresh(f"import {entry}")
    assert result.returncode == 0, result.stderr


def test_the_shim_patches_both_names() -> None:
    """After the shim, compat's ``_PY3`` is True and ``twisted.python.constants``
    is the ``constantly`` package; installing again changes nothing."""
    result = fresh(
        """
        import sys
        import constantly
        import twisted.python.compat as compat
        from httpupload import _wokkel_compat

        assert compat._PY3 is True
        assert sys.modules["twisted.python.constants"] is constantly
        _wokkel_compat.install()
        assert compat._PY3 is True
        assert sys.modules["twisted.python.constants"] is constantly
        from twisted.python.constants import ValueConstant, Values
        assert Values is constantly.Values and ValueConstant is constantly.ValueConstant
        """
    )
    assert result.returncode == 0, result.stderr
