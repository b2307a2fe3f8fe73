"""Lets wokkel 18.0.0 import on current Twisted.

wokkel's last release reads ``twisted.python.compat._PY3`` (removed from
Twisted) and imports ``twisted.python.constants`` (moved to the
``constantly`` package).  The upstream fix (ralphm/wokkel#32) was never
released.  This module restores both names and is imported by the package
before anything touches wokkel.  It is idempotent.
"""

import sys

import constantly
import twisted.python.compat


def install() -> None:
    """Put back the two names wokkel needs; safe to call more than once."""
    # Set unconditionally: probing a deprecated compat name with hasattr
    # emits a DeprecationWarning.
    twisted.python.compat._PY3 = True  # type: ignore[attr-defined]
    sys.modules.setdefault("twisted.python.constants", constantly)


install()
