"""The demo behind scripts/demo: Prosody + httpupload on free ports, one real upload.

Starts a throw-away Prosody (user alice@localhost) and ``twistd -n httpupload`` in a
temporary folder, uploads a small file with slixmpp's XEP-0363 plugin as alice, prints
a GET URL that works and a curl command for it, then waits for Ctrl-C and cleans up.
It reuses the runners of the end-to-end tests (tests/integration/).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

from client import XmppClient, XmppClientError, download  # noqa: E402
from prosody import Prosody, ProsodyError  # noqa: E402
from twistd import HttpUpload, HttpUploadError  # noqa: E402

USER, PASSWORD = "alice", "alice-demo-password"
COMPONENT_JID, SECRET = "upload.localhost", "demo-component-secret"


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt: the servers stop either way."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder at the end"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit after printing the URL instead of waiting for Ctrl-C",
    )
    args = parser.parse_args(argv)

    # Set both: a shell without job control starts background jobs ignoring SIGINT.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    base = Path(tempfile.mkdtemp(prefix="httpupload-demo-"))
    prosody = Prosody(
        components={COMPONENT_JID: SECRET},
        users={USER: PASSWORD},
        base_dir=base / "prosody",
    )
    service = HttpUpload(
        server_port=0,
        secret=SECRET,
        component_jid=COMPONENT_JID,
        domains=["localhost"],
        max_file_size=100 * 1024 * 1024,
        base_dir=base / "httpupload",
    )
    try:
        print(f"demo folder: {base}", flush=True)
        prosody.setup()
        prosody.start()
        print(
            f"prosody:    c2s 127.0.0.1:{prosody.c2s_port}, "
            f"component 127.0.0.1:{prosody.component_port}",
            flush=True,
        )
        service.server_port = prosody.component_port
        service.setup()
        service.start(wait_online=True)
        print(f"httpupload: {service.public_url} (log: {service.log_path})", flush=True)

        data = f"Hello from httpupload, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        with XmppClient(
            f"{USER}@localhost", PASSWORD, port=prosody.c2s_port
        ) as session:
            found = session.find_upload_service()
            get_url = session.upload("hello demo.txt", data, content_type="text/plain")
        status, _headers, body = download(get_url)
        if status != 200 or body != data:
            print(
                f"GET {get_url} answered {status}, not the uploaded bytes", flush=True
            )
            return 1
        print(
            f"uploaded {len(data)} bytes as {USER}@localhost through {found} "
            "with slixmpp's xep_0363",
            flush=True,
        )
        print(f"GET URL:    {get_url}", flush=True)
        print(f"try:        curl {shlex.quote(get_url)}", flush=True)
        print(
            f"log in with any XMPP client as {USER}@localhost / {PASSWORD} "
            f"at 127.0.0.1:{prosody.c2s_port} (self-signed certificate)",
            flush=True,
        )
        if args.once:
            return 0
        print("running; press Ctrl-C to stop", flush=True)
        while prosody.running and service.running:
            time.sleep(0.5)
        print("a server exited; see the logs above", flush=True)
        print(prosody.logs()[-3000:], service.log_text()[-3000:], sep="\n")
        return 1
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    except (ProsodyError, HttpUploadError, XmppClientError, TimeoutError) as error:
        print(f"demo failed: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        service.stop()
        prosody.stop()
        if args.keep:
            print(f"kept {base}", flush=True)
        else:
            shutil.rmtree(base, ignore_errors=True)
        print("cleaned up", flush=True)


if __name__ == "__main__":
    sys.exit(main())
