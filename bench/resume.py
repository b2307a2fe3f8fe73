"""Resumable uploads, measured (#12): bytes sent over bytes stored, and the cost.

    .venv/bin/python bench/resume.py                   # 1 GiB cut 3 times + costs
    .venv/bin/python bench/resume.py --size-mib 256 --rounds 3
    .venv/bin/python bench/resume.py --rev 0e55764     # costs against an older commit

A child process serves an ``UploadSite`` on filesystem storage under
``--dir`` (SQLite-free: a memory metadata store, so that only the upload
path is measured) and mints the slots; the parent is a plain-socket client
that streams from a file, never holding it in memory.

- **cut**: one upload cut three times (at 25, 50 and 75 % of the body, the
  client's socket reset mid-PATCH), each time resumed by tus 1.0 (``HEAD``
  for the offset, ``PATCH`` the rest): total bytes sent ÷ bytes stored, the
  wall time, and the SHA-256 of the GET.
- **cost**: uncut plain PUTs (200 x 1 MiB one at a time, and one large
  upload of the cut's size), alternating this checkout and ``--rev``'s
  (``git worktree``) ``--rounds`` times; medians and spreads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CHUNK = 256 * 1024
KEY = b"k" * 32
OWNER = "bench@localhost"


# -- the child: a site on filesystem storage -------------------------------------


def serve(folder: Path, slots: list[int]) -> None:
    """Serve uploads; print the port and one minted slot per size, as JSON."""
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool

    from httpupload.metadata import FileRecord
    from httpupload.metadata.memory import MemoryMetadataStore
    from httpupload.slots import SlotSigner
    from httpupload.storage.filesystem import FilesystemStorage
    from httpupload.web.site import UploadSite
    from httpupload.web.uploads import UploadReceiver

    pool = ThreadPool(1, 4)
    pool.start()
    storage = FilesystemStorage(folder, reactor, pool)  # type: ignore[arg-type]
    storage.prepare()
    metadata = MemoryMetadataStore()
    metadata.start()
    signer = SlotSigner(KEY, reactor)  # type: ignore[arg-type]
    receiver = UploadReceiver(signer, storage, reactor, metadata=metadata)  # type: ignore[arg-type]
    receiver.max_uploads_per_address = 1000
    site = UploadSite(receiver, storage, reactor, metadata=metadata, min_upload_rate=0)  # type: ignore[arg-type]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    minted = []
    now = reactor.seconds()  # type: ignore[attr-defined]
    for size in slots:
        slot, token = signer.mint("f.bin", size, None, OWNER, 86400)
        record = FileRecord(
            slot.file_id,
            OWNER,
            "f.bin",
            size,
            None,
            "message",
            now,
            slot.expires,
            None,
        )
        metadata.reserve(record, 86400, lambda usage: None)
        minted.append({"path": "/" + slot.path, "token": token, "size": size})
    print(json.dumps({"port": port.getHost().port, "slots": minted}), flush=True)
    reactor.run()  # type: ignore[attr-defined]
    pool.stop()


# -- the parent: a streaming client ----------------------------------------------


class Server:
    """A child serving one checkout's code; its slots, used in order."""

    def __init__(self, source: Path, folder: Path, sizes: list[int]) -> None:
        env = {**os.environ, "PYTHONPATH": str(source)}
        args = [
            sys.executable,
            str(REPO / "bench" / "resume.py"),
            "--serve",
            str(folder),
            *[f"--slot={s}" for s in sizes],
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)  # noqa: S603
        assert self.process.stdout is not None
        told = json.loads(self.process.stdout.readline())
        self.port: int = told["port"]
        self.slots: list[dict[str, object]] = told["slots"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError("closed before a response")
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        got = sock.recv(65536)
        if not got:
            break
        rest += got
    return int(lines[0].split()[1]), headers, rest[:length]


def request(
    port: int,
    head: str,
    path: Path | None = None,
    start: int = 0,
    length: int = 0,
    cut_after: int | None = None,
) -> tuple[int, dict[str, str], int]:
    """Send a request whose body is ``length`` bytes of ``path`` from ``start``;
    reset the connection after ``cut_after`` body bytes.  (status, headers, sent)."""
    sock = _connect(port)
    sock.sendall(head.encode("latin-1"))
    sent = 0
    try:
        if path is not None and length:
            with open(path, "rb") as f:
                f.seek(start)
                while sent < length:
                    want = min(CHUNK, length - sent)
                    if cut_after is not None:
                        want = min(want, cut_after - sent)
                        if want <= 0:
                            sock.setsockopt(
                                socket.SOL_SOCKET,
                                socket.SO_LINGER,
                                b"\x01\x00\x00\x00\x00\x00\x00\x00",
                            )
                            sock.close()
                            return 0, {}, sent
                    sock.sendall(f.read(want))
                    sent += want
        status, headers, _ = _response(sock)
        return status, headers, sent
    finally:
        sock.close()


def _target(slot: dict[str, object]) -> str:
    return f"{slot['path']}?token={quote(str(slot['token']))}"


def put(port: int, slot: dict[str, object], path: Path) -> int:
    size = int(slot["size"])  # type: ignore[call-overload]
    head = f"PUT {_target(slot)} HTTP/1.1\r\nHost: b\r\nContent-Length: {size}\r\n\r\n"
    status, _, _ = request(port, head, path, 0, size)
    return status


def cut_upload(
    port: int, slot: dict[str, object], path: Path, cuts: int
) -> dict[str, float]:
    """The upload cut ``cuts`` times and resumed with tus; what it cost."""
    size = int(slot["size"])  # type: ignore[call-overload]
    target = _target(slot)
    points = [size * (i + 1) // (cuts + 1) for i in range(cuts)]
    sent_total = 0
    started = time.perf_counter()
    offset = 0
    for point in [*points, None]:
        head = (
            f"PATCH {target} HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {offset}\r\nContent-Length: {size - offset}\r\n\r\n"
        )
        cut_after = None if point is None else point - offset
        status, _, sent = request(port, head, path, offset, size - offset, cut_after)
        sent_total += sent
        time.sleep(0.05)  # the service notices the reset
        _, headers, _ = request(
            port, f"HEAD {target} HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\n\r\n"
        )
        offset = int(headers["upload-offset"])
        if point is None:
            assert status == 204, status
    elapsed = time.perf_counter() - started
    assert offset == size
    return {
        "sent": sent_total,
        "stored": size,
        "ratio": sent_total / size,
        "seconds": elapsed,
    }


def get_sha256(port: int, slot: dict[str, object]) -> str:
    sock = _connect(port)
    sock.sendall(
        f"GET {slot['path']} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode()
    )
    digest = hashlib.sha256()
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    _, _, rest = data.partition(b"\r\n\r\n")
    digest.update(rest)
    while chunk := sock.recv(1 << 20):
        digest.update(chunk)
    sock.close()
    return digest.hexdigest()


def file_of(folder: Path, size: int) -> tuple[Path, str]:
    path = folder / f"data-{size}.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MIB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return path, digest.hexdigest()


def checkout(rev: str, work: Path) -> Path:
    target = work / f"rev-{rev}"
    subprocess.run(  # noqa: S603
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(target), rev],  # noqa: S607
        check=True,
        capture_output=True,
    )
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--slot", type=int, action="append", default=[], help=argparse.SUPPRESS
    )
    parser.add_argument("--dir", type=Path, default=Path("/work/bench-resume"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rev", default="0e55764")
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.slot)
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        big = args.size_mib * MIB
        big_file, big_sha = file_of(work, big)
        small_file, _ = file_of(work, MIB)

        server = Server(REPO, work / "store-cut", [big])
        try:
            cut = cut_upload(server.port, server.slots[0], big_file, 3)
            cut["sha256_ok"] = get_sha256(server.port, server.slots[0]) == big_sha
        finally:
            server.stop()
        print(json.dumps({"cut": cut}), flush=True)

        old = checkout(args.rev, work)
        results: dict[str, dict[str, list[float]]] = {"after": {}, "before": {}}
        try:
            for round_ in range(args.rounds):
                for label, source in (("before", old), ("after", REPO)):
                    store = work / f"store-{label}-{round_}"
                    server = Server(source, store, [MIB] * args.small + [big])
                    try:
                        started = time.perf_counter()
                        for slot in server.slots[: args.small]:
                            assert put(server.port, slot, small_file) == 201
                        small_s = time.perf_counter() - started
                        started = time.perf_counter()
                        assert put(server.port, server.slots[-1], big_file) == 201
                        big_s = time.perf_counter() - started
                    finally:
                        server.stop()
                    row = results[label]
                    row.setdefault("1 MiB PUT/s", []).append(args.small / small_s)
                    row.setdefault(f"{args.size_mib} MiB PUT MB/s", []).append(
                        big / 1e6 / big_s
                    )
                    print(
                        json.dumps({label: {k: v[-1] for k, v in row.items()}}),
                        flush=True,
                    )
        finally:
            subprocess.run(  # noqa: S603
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],  # noqa: S607
                check=False,
                capture_output=True,
            )
    print(
        f"\n| measure | before ({args.rev}) | after | after ÷ before (medians) "
        "| outside the before spread? |"
    )
    print("|---|---|---|---|---|")
    for name in results["after"]:
        before, after = results["before"][name], results["after"][name]
        ratio = statistics.median(after) / statistics.median(before)
        outside = statistics.median(after) < min(before)
        print(
            f"| {name} | {' / '.join(f'{v:.0f}' for v in before)} | "
            f"{' / '.join(f'{v:.0f}' for v in after)} | {ratio:.2f} | "
            f"{'worse' if outside else 'no'} |"
        )
    print(
        f"\ncut {args.size_mib} MiB three times: sent/stored = {cut['ratio']:.4f}, "
        f"{cut['seconds']:.1f} s, SHA-256 "
        f"{'matches' if cut['sha256_ok'] else 'DIFFERS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
