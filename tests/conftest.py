"""Shared set-up: the wokkel shim must load before any test imports wokkel.

The unit suite runs under pytest-socket (``--disable-socket
--allow-unix-socket`` in pyproject.toml): a test that opens a TCP socket
without saying so (``@pytest.mark.enable_socket``: the socket is its point)
fails. The end-to-end suite (marked ``integration``) talks to real servers,
so its tests are allowed sockets here.
"""

import httpupload  # noqa: F401, I001  (first: makes wokkel importable)

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from pgserver import postgresql  # noqa: F401  (session fixtures for every test)
from s3server import seaweedfs  # noqa: F401
from webserver import Server, start_server


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A real UploadSite on a loopback port, with default limits."""
    running = start_server(tmp_path)
    yield running
    await running.listening.stopListening()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests may open sockets: real servers are their point."""
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.enable_socket)
