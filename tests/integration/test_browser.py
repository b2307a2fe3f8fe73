"""A real web client in a real browser: Converse.js 14 in headless Chromium.

The page (``tests/browser/index.html``) is served on one origin, loads Converse.js
from ``tests/browser/node_modules`` as an ES module and logs in over WebSocket to a
Prosody of this module as alice. ``tests/browser/upload.mjs`` (playwright-core
driving Debian's ``/usr/bin/chromium``, no browser download) opens a chat with
bob, puts two files into the chat toolbar's file input, waits until Converse
reports both uploaded, and fetches each GET URL from the page. httpupload's
``public_url`` is another origin (another port), so every PUT and GET is
cross-origin: this is the proof that CORS works for browser clients (Converse
sends the slot's ``Authorization`` header on its PUT, after a preflight).

Chromium starts once, for the whole module; the tests assert on what that run
saw. A failing test carries the browser console, the requests to the upload
origin, and the Prosody and twistd logs.

Set up by ``scripts/test``: Debian ``chromium`` and ``npm ci`` in ``tests/browser``.
With ``HTTPUPLOAD_BROWSER_KEEP=DIR`` the run's screenshot (``page.png``) and the
driver's report (``report.json``) are copied into DIR.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import pytest
from client import XmppClient, download
from prosody import Prosody, die_with_parent
from twistd import REPO_ROOT, HttpUpload

pytestmark = pytest.mark.integration

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
CHROMIUM = "/usr/bin/chromium"
DOMAIN = "localhost"
COMPONENT_JID = f"upload.{DOMAIN}"
COMPONENT_SECRET = "browser-component-secret"
USER, PASSWORD = "alice", "alice-password-in-the-browser"
CONTACT, CONTACT_PASSWORD = "bob", "bob-password-in-the-browser"
#: Each step of the driver (log in, discovery, the uploads, ...) gets this long.
STEP_TIMEOUT_MS = 30_000
#: The whole driver run, Chromium start and stop included.
RUN_TIMEOUT = 150.0
TAIL = 150
NS_OOB = "jabber:x:oob"
#: playwright-core 1.65 runs on Node.js 20 or newer.
NODE_MAJOR = 20

#: The files Converse sends: a real PNG image (Converse shows it inline, so the
#: page loads it as an <img>), and a name with a space and non-ASCII letters
#: whose extension no browser knows (Converse then asks for a slot with
#: content-type='' and PUTs with an empty Content-Type).
IMAGE = "photo.png"
IMAGE_SIZE = (320, 240)
OTHER = "résumé notes.xyz"
OTHER_SIZE = 1536 * 1024 + 1


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG of random pixels (so it does not compress)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def _node_major() -> int:
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()  # "v20.20.2"
    try:
        return int(version.lstrip("v").split(".")[0])
    except ValueError:
        return 0


def _missing() -> list[str]:
    missing = [
        tool for tool in ("prosody", "prosodyctl", "node") if not shutil.which(tool)
    ]
    if shutil.which("node") and _node_major() < NODE_MAJOR:
        missing.append(f"node >= {NODE_MAJOR} (playwright-core needs it)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    for package in ("converse.js", "playwright-core"):
        if not (BROWSER_DIR / "node_modules" / package / "package.json").exists():
            missing.append(f"tests/browser/node_modules/{package} (npm ci)")
    return missing


@pytest.fixture(scope="module")
def requirements() -> None:
    missing = _missing()
    if not missing:
        return
    message = f"missing {', '.join(missing)}: scripts/test installs them"
    if os.environ.get("HTTPUPLOAD_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)


# ---- servers


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of tests/browser, its access log kept for failure reports."""

    log_lines: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        self.log_lines.append(format % args)


@dataclass
class PageServer:
    """tests/browser over HTTP on 127.0.0.1, in a thread (the page's origin)."""

    log_lines: list[str] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        handler = type("Handler", (_PageHandler,), {"log_lines": self.log_lines})
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(handler, directory=str(BROWSER_DIR))
        )
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="page-server", daemon=True
        )
        self.thread.start()

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)


class Inbox:
    """bob, online over STARTTLS with slixmpp: the messages Converse sends him."""

    def __init__(self, session: XmppClient) -> None:
        self.session = session
        #: (body, OOB URL) of each chat message, plain values.
        self.messages: list[tuple[str, str | None]] = []
        self._changed = asyncio.Event()
        session.xmpp.add_event_handler("message", self._on_message)
        session.xmpp.send_presence()
        session.disco_items(DOMAIN)  # a round trip: the server has the presence

    def _on_message(self, message: Any) -> None:
        if message["type"] != "chat" or not message["body"]:
            return
        oob = message.xml.find(f"{{{NS_OOB}}}x/{{{NS_OOB}}}url")
        self.messages.append((message["body"], None if oob is None else oob.text))
        self._changed.set()

    def wait(self, count: int, timeout: float = 15.0) -> list[tuple[str, str | None]]:
        """Wait for count messages (or the time limit); return what arrived."""

        async def enough() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            self.session.run(enough(), timeout=timeout)
        except TimeoutError:
            pass
        return list(self.messages)


@dataclass
class BrowserRun:
    """What one run of the driver saw, with the logs to show when a test fails."""

    result: dict[str, Any]
    files: dict[str, bytes]
    upload_origin: str
    page_origin: str
    seconds: float
    prosody: Prosody
    service: HttpUpload
    page_log: list[str]
    #: What bob received: (body, OOB URL) per message.
    received: list[tuple[str, str | None]] = field(default_factory=list)
    driver_stderr: str = ""

    def sections(self) -> list[tuple[str, str]]:
        result = self.result
        network = [
            f"{item.get('method')} {item.get('url')} [{item.get('type')}"
            f"{', preflight' if item.get('preflight') else ''}] -> {item.get('status')}"
            + (f" FAILED {item['failed']}" if item.get("failed") else "")
            for item in result.get("network", [])
        ]
        return [
            (
                "browser run",
                f"step: {result.get('step')}\nerror: {result.get('error')}\n"
                f"timings (ms): {result.get('timings')}\n"
                f"uploaded: {json.dumps(result.get('uploaded'), ensure_ascii=False)}\n"
                f"chat errors: {result.get('chatErrors')}\n"
                f"bob received: {self.received}\n"
                f"driver stderr: {self.driver_stderr[-4000:]}",
            ),
            ("requests to the upload origin", "\n".join(network)),
            ("browser console", _tail("\n".join(result.get("console", [])))),
            ("page server log", _tail("\n".join(self.page_log))),
            ("twistd log", _tail(self.service.log_text())),
            ("prosody log", _tail(self.prosody.logs())),
        ]


def _tail(text: str, lines: int = TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def browser_prosody(requirements: None) -> Iterator[Prosody]:
    """A Prosody of its own: WebSocket, mod_blocklist (Converse 14 needs it)."""
    server = Prosody(
        domain=DOMAIN,
        components={COMPONENT_JID: COMPONENT_SECRET},
        users={USER: PASSWORD, CONTACT: CONTACT_PASSWORD},
        websocket=True,
        extra_modules=["blocklist"],
    )
    try:
        server.__enter__()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def browser_service(browser_prosody: Prosody) -> Iterator[HttpUpload]:
    service = HttpUpload(
        server_port=browser_prosody.component_port,
        secret=COMPONENT_SECRET,
        component_jid=COMPONENT_JID,
        domains=[DOMAIN],
        max_file_size=8 * 1024 * 1024,
    )
    try:
        service.__enter__()
        yield service
    finally:
        service.cleanup()


def _run_driver(config: Path) -> tuple[dict[str, Any], str, float]:
    """Run upload.mjs; return its report, its stderr and how long it took.

    node runs in a session of its own, so that a run over time is killed with
    the Chromium it started; and it gets SIGTERM if this process dies.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        ["node", str(BROWSER_DIR / "upload.mjs"), str(config)],
        cwd=str(BROWSER_DIR),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n(driver killed after {RUN_TIMEOUT} s)".encode()
    seconds = time.monotonic() - started
    try:
        result = json.loads(stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"step": "driver", "error": f"no report: {stdout[-4000:]!r}"}
    return result, stderr.decode(errors="replace"), seconds


@pytest.fixture(scope="module")
def browser_run(
    browser_prosody: Prosody, browser_service: HttpUpload
) -> Iterator[BrowserRun]:
    """Run the driver once: Converse logs in, uploads two files, fetches their URLs."""
    bob = XmppClient(
        f"{CONTACT}@{DOMAIN}", CONTACT_PASSWORD, port=browser_prosody.c2s_port
    )
    page = PageServer()
    with bob, tempfile.TemporaryDirectory(prefix="httpupload-browser-") as tmp:
        inbox = Inbox(bob)
        work = Path(tmp)
        files = {IMAGE: _png(*IMAGE_SIZE), OTHER: os.urandom(OTHER_SIZE)}
        paths = []
        for name, data in files.items():
            (work / name).write_bytes(data)
            paths.append(str(work / name))
        query = urlencode(
            {
                "ws": browser_prosody.websocket_url,
                "jid": f"{USER}@{DOMAIN}/browser",
                "password": PASSWORD,
            }
        )
        upload_origin = browser_service.public_url.rstrip("/")
        config = {
            "contact": f"{CONTACT}@{DOMAIN}",
            "files": paths,
            "uploadOrigin": upload_origin,
            "chromium": CHROMIUM,
            "userDataDir": str(work / "chromium-profile"),
            "timeoutMs": STEP_TIMEOUT_MS,
            "screenshot": str(work / "page.png"),
        }
        page.start()
        try:
            config["pageUrl"] = f"{page.origin}/index.html?{query}"
            (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
            result, stderr, seconds = _run_driver(work / "config.json")
        finally:
            page.stop()
        received = inbox.wait(len(result.get("uploaded") or ()))
        keep = os.environ.get("HTTPUPLOAD_BROWSER_KEEP")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            if (work / "page.png").exists():
                shutil.copy(work / "page.png", Path(keep) / "page.png")
            (Path(keep) / "report.json").write_text(
                json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8"
            )
        yield BrowserRun(
            result=result,
            files=files,
            upload_origin=upload_origin,
            page_origin=page.origin,
            seconds=seconds,
            prosody=browser_prosody,
            service=browser_service,
            page_log=page.log_lines,
            received=received,
            driver_stderr=stderr,
        )


@contextmanager
def diagnostics(request: pytest.FixtureRequest, run: BrowserRun) -> Iterator[None]:
    """On failure, attach the browser console and server logs to the report."""
    try:
        yield
    except BaseException:
        for title, text in run.sections():
            request.node.add_report_section("call", title, text)
        raise


def _requests(run: BrowserRun, method: str) -> list[dict[str, Any]]:
    return [
        item
        for item in run.result.get("network", [])
        if item.get("method") == method and not item.get("preflight")
    ]


def _uploaded(run: BrowserRun) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in run.result.get("uploaded", [])}


# ---- tests


def test_converse_uploads_both_files(
    request: pytest.FixtureRequest, browser_run: BrowserRun
) -> None:
    """Converse logged in, found the service, and reports every file uploaded."""
    with diagnostics(request, browser_run):
        assert browser_run.result.get("error") is None
        assert browser_run.result.get("step") == "done"
        assert browser_run.result.get("chatErrors") == []
        uploaded = _uploaded(browser_run)
        assert set(uploaded) == set(browser_run.files)
        for item in uploaded.values():
            assert item["put"].startswith(browser_run.upload_origin + "/")
            assert item["get"].startswith(browser_run.upload_origin + "/")
        assert (
            urlsplit(browser_run.page_origin).netloc
            != urlsplit(browser_run.upload_origin).netloc
        )


def test_each_put_follows_a_cors_preflight_and_gets_201(
    request: pytest.FixtureRequest, browser_run: BrowserRun
) -> None:
    """The browser asked first (OPTIONS), then PUT with the slot's header: 201."""
    with diagnostics(request, browser_run):
        network = browser_run.result.get("network", [])
        uploaded = _uploaded(browser_run)
        assert set(uploaded) == set(browser_run.files)
        for name, item in uploaded.items():
            puts = [r for r in _requests(browser_run, "PUT") if r["url"] == item["put"]]
            assert len(puts) == 1, f"{name}: {puts}"
            put = puts[0]
            assert put["status"] == 201, put
            assert not put["failed"], put
            headers = {k.lower(): v for k, v in put["requestHeaders"].items()}
            assert headers.get("origin") == browser_run.page_origin
            # Converse sends the slot's <header name='Authorization'> on the PUT.
            assert headers.get("authorization", "").startswith("Bearer ")
            assert len(browser_run.files[name]) == int(headers["content-length"])
            # Chromium reports the preflight as its own request, before the PUT.
            preflights = [
                r for r in network if r["preflight"] and r["url"] == item["put"]
            ]
            assert len(preflights) == 1, f"{name}: {network}"
            preflight = preflights[0]
            assert preflight["method"] == "OPTIONS"
            assert preflight["status"] in (200, 204), preflight
            asked = {k.lower(): v for k, v in preflight["requestHeaders"].items()}
            assert asked.get("access-control-request-method") == "PUT"
            assert "authorization" in asked.get("access-control-request-headers", "")
            # Its answer came in before the PUT went out.
            assert preflight["respondedAt"] <= put["sentAt"], (preflight, put)
            answer = {k.lower(): v for k, v in preflight["responseHeaders"].items()}
            assert "PUT" in answer.get("access-control-allow-methods", "")
            assert (
                "authorization"
                in answer.get("access-control-allow-headers", "").lower()
            )


def test_files_arrive_byte_for_byte(
    request: pytest.FixtureRequest, browser_run: BrowserRun
) -> None:
    """The GET URL Converse sent serves exactly the bytes of the chosen file."""
    with diagnostics(request, browser_run):
        uploaded = _uploaded(browser_run)
        assert set(uploaded) == set(browser_run.files)
        for name, item in uploaded.items():
            status, headers, body = download(item["get"], timeout=30)
            assert status == 200, (name, status, headers)
            assert len(body) == len(browser_run.files[name]), name
            assert body == browser_run.files[name], name
            # The file's name survives in the URL (percent-encoded).
            assert unquote(urlsplit(item["get"]).path).endswith("/" + name)


def test_get_url_works_from_the_page(
    request: pytest.FixtureRequest, browser_run: BrowserRun
) -> None:
    """fetch() from the page's origin: allowed by CORS, same bytes, headers readable."""
    with diagnostics(request, browser_run):
        fetched = {item["url"]: item for item in browser_run.result.get("fetched", [])}
        uploaded = _uploaded(browser_run)
        assert set(uploaded) == set(browser_run.files)
        for name, item in uploaded.items():
            answer = fetched[item["get"]]
            assert answer["ok"], answer
            assert answer["status"] == 200, answer
            assert answer["type"] == "cors", answer
            data = browser_run.files[name]
            assert answer["size"] == len(data)
            assert answer["sha256"] == hashlib.sha256(data).hexdigest()
            # Exposed by Access-Control-Expose-Headers, so the page can read them.
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            assert answer["reprDigest"] == f"sha-256=:{digest}:", answer
            assert answer["etag"], answer
            assert answer["contentLength"] == str(len(data)), answer
        image = fetched[uploaded[IMAGE]["get"]]
        assert image["contentType"] == "image/png"
        assert image["contentDisposition"].startswith("inline")
        other = fetched[uploaded[OTHER]["get"]]
        assert other["contentType"] == "application/octet-stream"
        # Served as a download under its own name (RFC 8187), readable by the page.
        assert other["contentDisposition"].startswith("attachment;")
        assert "filename*=utf-8''r%C3%A9sum%C3%A9%20notes.xyz" in (
            other["contentDisposition"].replace("UTF-8", "utf-8")
        )
        # Converse showed the image in the chat: an <img> loaded cross-origin.
        shown = browser_run.result.get("images", [])
        assert shown == [
            {
                "url": uploaded[IMAGE]["get"],
                "width": IMAGE_SIZE[0],
                "height": IMAGE_SIZE[1],
            }
        ]


def test_contact_receives_the_get_urls(
    request: pytest.FixtureRequest, browser_run: BrowserRun
) -> None:
    """bob gets one chat message per file: the GET URL as body and as OOB data."""
    with diagnostics(request, browser_run):
        urls = {item["get"] for item in _uploaded(browser_run).values()}
        assert len(urls) == len(browser_run.files)
        assert sorted(browser_run.received) == sorted((url, url) for url in urls)


def test_runtime_is_small(browser_run: BrowserRun) -> None:
    """One Chromium run (start, log in, two uploads, fetches, stop) stays quick."""
    assert browser_run.seconds < 60, browser_run.result.get("timings")
