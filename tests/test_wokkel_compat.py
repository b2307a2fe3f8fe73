"""The shim that lets wokkel 18.0.0 import on current Twisted."""

import importlib
import sys


def test_wokkel_modules_import() -> None:
    """wokkel's disco, data_form and muc import once the package is imported."""
    import httpupload  # noqa: F401

    for name in ("wokkel.disco", "wokkel.data_form", "wokkel.muc", "wokkel.component"):
        assert importlib.import_module(name) is not None


def test_install_is_idempotent() -> None:
    """Calling install() again changes nothing and keeps the constants alias."""
    from httpupload import _wokkel_compat

    before = sys.modules["twisted.python.constants"]
    _wokkel_compat.install()
    assert sys.modules["twisted.python.constants"] is before
    from twisted.python.constants import ValueConstant, Values  # noqa: F401
