"""Session fixtures for the end-to-end tests: one Prosody, one httpupload process.

Both servers are started once per session on free 127.0.0.1 ports, stopped at the end
even when tests fail, and the tails of their logs are attached to every failing
integration test's report (they show up in pytest's output as "Captured ... log").

Without the Debian ``prosody`` package the integration tests are skipped, unless
``HTTPUPLOAD_REQUIRE_INTEGRATION=1`` is set (``scripts/test`` sets it), in which case
they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The helpers are plain modules next to this file; make them importable however
# pytest was asked to import test files (prepend, append or importlib mode).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from client import XmppClient  # noqa: E402
from prosody import Prosody  # noqa: E402
from twistd import HttpUpload  # noqa: E402

DOMAIN = "localhost"
COMPONENT_JID = "upload.localhost"
COMPONENT_SECRET = "component-secret-for-tests"
#: A second component of the session's Prosody, for tests that run (and kill) a
#: service of their own. Not a subdomain of DOMAIN, so it stays out of disco#items
#: (and out of the clients' discovery of upload.localhost); address it directly.
SPARE_COMPONENT_JID = "spare-upload.test"
SPARE_COMPONENT_SECRET = "spare-component-secret-for-tests"
USER = "alice"
PASSWORD = "alice-password-for-tests"
#: A second VirtualHost on the same server, not in the service's [access] domains.
OTHER_DOMAIN = "elsewhere.test"
OTHER_USER, OTHER_PASSWORD = "mallory", "mallory-password-for-tests"
#: The service's size limit in these tests: above the 20 MiB upload.
MAX_FILE_SIZE = 25 * 1024 * 1024
LOG_TAIL_LINES = 150

# Everything started here, so that logs can be attached and nothing outlives us.
_prosodies: list[Prosody] = []
_services: list[HttpUpload] = []


@atexit.register
def _stop_everything() -> None:
    """Last resort if pytest dies before the fixtures' finalizers ran."""
    for service in _services:
        service.kill()
    for server in _prosodies:
        server.stop(timeout=5)


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def register_service(service: HttpUpload) -> HttpUpload:
    """Track an extra httpupload process: its log goes into failure reports."""
    _services.append(service)
    return service


def forget_service(service: HttpUpload) -> None:
    if service in _services:
        _services.remove(service)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.failed and item.get_closest_marker("integration") is not None:
        for server in _prosodies:
            if server.base_dir is not None and server.log_path.exists():
                text = server.log_path.read_text(encoding="utf-8", errors="replace")
                report.sections.append(
                    (f"prosody log (last {LOG_TAIL_LINES} lines)", _tail(text))
                )
        for service in _services:
            text = service.log_text()
            if text:
                report.sections.append(
                    (
                        f"twistd log {service.component_jid} "
                        f"secret={'file' if service.secret_in_file else 'inline'}",
                        _tail(text),
                    )
                )
    return report


def _require_prosody() -> None:
    missing = [tool for tool in ("prosody", "prosodyctl") if shutil.which(tool) is None]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not found: install the Debian package prosody "
        "(scripts/test does it), or deselect with -m 'not integration'"
    )
    if os.environ.get("HTTPUPLOAD_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def prosody() -> Iterator[Prosody]:
    """A running Prosody: alice@localhost, upload.localhost, mallory@elsewhere.test.

    It also knows SPARE_COMPONENT_JID, for the extra services of make_service.
    """
    _require_prosody()
    server = Prosody(
        domain=DOMAIN,
        components={
            COMPONENT_JID: COMPONENT_SECRET,
            SPARE_COMPONENT_JID: SPARE_COMPONENT_SECRET,
        },
        users={USER: PASSWORD},
        extra_hosts=[OTHER_DOMAIN],
    )
    _prosodies.append(server)
    try:
        server.setup()
        server.register(OTHER_USER, OTHER_PASSWORD, OTHER_DOMAIN)
        server.start()
        yield server
    finally:
        server.cleanup()
        _prosodies.remove(server)


@pytest.fixture(scope="session")
def httpupload(prosody: Prosody) -> Iterator[HttpUpload]:
    """`twistd -n httpupload` connected to the session's Prosody as upload.localhost."""
    service = HttpUpload(
        server_port=prosody.component_port,
        secret=COMPONENT_SECRET,
        component_jid=COMPONENT_JID,
        domains=[DOMAIN],
        max_file_size=MAX_FILE_SIZE,
        secret_in_file=True,
        # Several tests probe the service with slot requests they never use
        # (the restart test asks every 20 ms): no bound on unused slots here.
        # test_hostile.py checks the default bound on a service of its own.
        overrides={"quotas": {"pending_slots": 0}},
    )
    register_service(service)
    try:
        service.setup()
        service.start(wait_online=True, timeout=30)
        yield service
    finally:
        service.cleanup()
        forget_service(service)


@pytest.fixture
def connect(prosody: Prosody) -> Iterator[Callable[..., XmppClient]]:
    """A factory of logged-in slixmpp sessions (alice by default), closed after."""
    sessions: list[XmppClient] = []

    def make(
        timeout: float = 30.0, jid: str = f"{USER}@{DOMAIN}", password: str = PASSWORD
    ) -> XmppClient:
        session = XmppClient(jid, password, port=prosody.c2s_port, timeout=timeout)
        sessions.append(session)
        session.connect()
        return session

    try:
        yield make
    finally:
        for session in sessions:
            session.close()


@pytest.fixture
def client(connect: Callable[..., XmppClient], httpupload: HttpUpload) -> XmppClient:
    """A slixmpp session logged in as alice@localhost over STARTTLS."""
    return connect()


@pytest.fixture
def outsider(connect: Callable[..., XmppClient], httpupload: HttpUpload) -> XmppClient:
    """A session of mallory@elsewhere.test, a user of a domain the service refuses."""
    return connect(jid=f"{OTHER_USER}@{OTHER_DOMAIN}", password=OTHER_PASSWORD)


@pytest.fixture
def make_service(prosody: Prosody) -> Iterator[Callable[..., HttpUpload]]:
    """A factory of extra httpupload processes against the session's Prosody.

    Keyword arguments go to ``HttpUpload``; the process is set up but not started.
    Each is stopped after the test, and its log joins failure reports meanwhile.
    """
    made: list[HttpUpload] = []

    def make(**kwargs: Any) -> HttpUpload:
        settings: dict[str, Any] = {
            "server_port": prosody.component_port,
            "secret": COMPONENT_SECRET,
            "component_jid": COMPONENT_JID,
            "domains": [DOMAIN],
            "max_file_size": MAX_FILE_SIZE,
            **kwargs,
        }
        service = register_service(HttpUpload(**settings))
        made.append(service)
        return service.setup()

    try:
        yield make
    finally:
        for service in made:
            service.cleanup()
            forget_service(service)


@pytest.fixture
def make_spare_service(
    make_service: Callable[..., HttpUpload],
) -> Callable[..., HttpUpload]:
    """make_service, connecting as SPARE_COMPONENT_JID: a service a test may kill.

    It shares the session's Prosody but neither the JID nor the storage of the
    session's service. Clients reach it by its JID (``spare.component_jid``).
    """

    def make(**kwargs: Any) -> HttpUpload:
        return make_service(
            component_jid=SPARE_COMPONENT_JID, secret=SPARE_COMPONENT_SECRET, **kwargs
        )

    return make
