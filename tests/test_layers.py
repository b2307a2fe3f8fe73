"""The lower layers load no protocol machinery: checked in fresh interpreters.

import-linter (``lint-imports``, the contracts in pyproject.toml) checks the
arrows between our own packages; it cannot name a subpackage of another
project, so what each lower layer must not pull in of Twisted's HTTP and
XMPP code is checked here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROTOCOLS = (
    "twisted.web.server",
    "twisted.web.http",
    "wokkel",
    "twisted.words.xish",
    "prometheus_client",
    "httpupload.web",
    "httpupload.xmpp",
)


def loaded(module: str) -> list[str]:
    """The modules of PROTOCOLS that importing ``module`` alone loads."""
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(n for n in {PROTOCOLS!r} if n in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split()


@pytest.mark.parametrize(
    "module",
    [
        "httpupload.config",
        "httpupload.slots",
        "httpupload.policy",
        "httpupload.granting",
        "httpupload.metadata",
        "httpupload.metadata.sqlite",
        # the protocol only: a backend's sender reaches the HTTP connection
        # it writes into through httpupload._twisted_private (sendfile)
        "httpupload.storage",
    ],
)
def test_lower_layers_load_no_http_or_xmpp_machinery(module: str) -> None:
    """Config, slots, policy, granting, metadata and the storage protocol load
    neither twisted.web nor wokkel nor our web and xmpp packages."""
    assert loaded(module) == []
