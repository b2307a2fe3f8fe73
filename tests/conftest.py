"""Shared set-up: the wokkel shim must load before any test imports wokkel."""

import httpupload  # noqa: F401, I001  (first: makes wokkel importable)

from collections.abc import AsyncIterator
from pathlib import Path

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
