"""Blocking file I/O of an upload: on the reactor thread, or behind a file-I/O thread?

The filesystem backend opens each upload's file for writing, writes each
chunk and closes (or unlinks, on abort) on the reactor thread, as
twisted.web does with the bodies it spools; the fsyncs already run in a
thread.  This measures that choice in process, without HTTP: N files of
``--size`` bytes written in ``--chunk``-byte writes

- ``inline``: open, each write and close called on the reactor thread;
- ``thread-each``: each of them a round trip to one dedicated file-I/O
  thread (``deferToThreadPool``), the reactor waiting for each;
- ``thread-queued``: the writes handed to that thread through a bounded
  queue (at most ``--depth`` in flight, as a write-behind would be), the
  reactor waiting only when the queue is full and for the close.

For each: wall time per file and reactor-thread CPU per file (what the
reactor could not spend on other connections).  Run:
``.venv/bin/python bench/fileio.py [--files 200] [--size 1048576] [--chunk 65536]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

MODE = 0o600


def _open(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    return os.fdopen(fd, "wb")


def inline(paths: list[Path], chunk: bytes, count: int) -> None:
    for path in paths:
        f = _open(path)
        for _ in range(count):
            f.write(chunk)
        f.close()


async def thread_each(
    pool: ThreadPool, paths: list[Path], chunk: bytes, count: int
) -> None:
    def hop(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, f, *args)  # type: ignore[arg-type]

    for path in paths:
        f = await hop(_open, path)
        for _ in range(count):
            await hop(f.write, chunk)
        await hop(f.close)


async def thread_queued(
    pool: ThreadPool, paths: list[Path], chunk: bytes, count: int, depth: int
) -> None:
    def hop(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, f, *args)  # type: ignore[arg-type]

    for path in paths:
        f = await hop(_open, path)
        in_flight: list[Deferred[Any]] = []
        for _ in range(count):
            in_flight.append(hop(f.write, chunk))
            if len(in_flight) >= depth:
                await in_flight.pop(0)
        if in_flight:
            await defer.gatherResults(in_flight)
        await hop(f.close)


def measure(name: str, run: Callable[[], Any], files: int) -> tuple[str, float, float]:
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    run()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    return name, wall / files * 1e6, cpu / files * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--chunk", type=int, default=64 * 1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="a folder on the storage disk")
    args = parser.parse_args()
    chunk = os.urandom(args.chunk)
    count = max(1, args.size // args.chunk)
    pool = ThreadPool(1, 1, name="file-io")
    pool.start()
    results: list[tuple[str, float, float]] = []

    def fresh() -> list[Path]:
        folder = Path(tempfile.mkdtemp(prefix="fileio-", dir=args.dir))
        return [folder / f"f{i}" for i in range(args.files)]

    def clean(paths: list[Path]) -> None:
        shutil.rmtree(paths[0].parent)

    def in_reactor(coro: Callable[[], Any]) -> Callable[[], None]:
        # The reactor runs for one measurement; thread_time is its thread's.
        def run() -> None:
            done: list[Any] = []

            def go() -> None:
                d = defer.ensureDeferred(coro())
                d.addBoth(done.append).addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

            reactor.callWhenRunning(go)  # type: ignore[attr-defined]
            reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]

        return run

    # The inline case needs no reactor; the threaded ones share its one run.
    measurements: list[tuple[str, Callable[[list[Path]], Any]]] = [
        ("inline", lambda p: inline(p, chunk, count)),
    ]
    for _ in range(args.rounds):
        for name, case in measurements:
            paths = fresh()
            results.append(measure(name, lambda c=case, p=paths: c(p), args.files))
            clean(paths)

    async def threaded() -> None:
        for _ in range(args.rounds):
            for name, case in (
                ("thread-each", lambda p: thread_each(pool, p, chunk, count)),
                (
                    f"thread-queued(depth {args.depth})",
                    lambda p: thread_queued(pool, p, chunk, count, args.depth),
                ),
            ):
                paths = fresh()
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                await case(paths)
                wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
                results.append((name, wall / args.files * 1e6, cpu / args.files * 1e6))
                clean(paths)

    in_reactor(threaded)()
    pool.stop()
    print(
        f"{args.files} files of {args.size} bytes in {args.chunk}-byte writes "
        f"({count} per file), {args.rounds} rounds; µs per file"
    )
    print(f"{'case':28} {'wall':>18} {'reactor-thread CPU':>22}")
    names = list(dict.fromkeys(name for name, _, _ in results))
    for name in names:
        walls = [w for n, w, _ in results if n == name]
        cpus = [c for n, _, c in results if n == name]
        print(
            f"{name:28} {min(walls):8.0f}-{max(walls):<8.0f} "
            f"{min(cpus):10.0f}-{max(cpus):<10.0f}"
        )


if __name__ == "__main__":
    main()
