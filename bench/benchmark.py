"""httpupload side by side with Prosody's, ejabberd's upload services and nginx.

Run through ``bench/run`` (which installs what this needs); ``--help`` lists the
options. Everything runs on this machine, on 127.0.0.1, in one run:

- ``httpupload``: ``twistd -n httpupload`` as an XEP-0114 component of a stock
  Prosody (slot requests go client -> Prosody c2s -> component);
- ``prosody``: Prosody 0.12's own ``mod_http_file_share``, stock;
- ``prosody-tuned``: the same with ``network_settings = { min_wait = 0.00001 }``;
- ``ejabberd``: ejabberd 23.01 with ``mod_http_upload``;
- ``nginx``: nginx with the dav module (PUT/GET only, no slots): the loopback ceiling.

Slot requests: slixmpp clients (``bench/slotload.py``), the same number of processes
and connections for every XMPP service. PUT and GET: curl (``bench/transfer.py``).
Memory: VmRSS / VmHWM of each server's process tree from ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from servers import (  # noqa: E402
    REPO,
    BenchHttpUpload,
    BenchProsody,
    Ejabberd,
    Nginx,
    ShareProsody,
    free_port,
)
from transfer import Transfer, TransferError, run_batch  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
USER, DOMAIN = "bench", "localhost"
PASSWORD = secrets.token_urlsafe(12)
COMPONENT_SECRET = secrets.token_urlsafe(16)
SIZE_LIMIT = 2 * GIB
#: Every server gets a listen backlog of 1024 (ejabberd's default of 5, Twisted's
#: 50 and Prosody's 128 drop connections when 200 clients connect at once).
BACKLOG = 1024
STOCK = f"network_settings = {{ tcp_backlog = {BACKLOG} }}"
TUNED = f"network_settings = {{ tcp_backlog = {BACKLOG}; min_wait = 0.00001 }}"
#: For both Prosody shares. Requests to 127.0.0.1 (not share.localhost) go to the
#: share; and with internal storage Prosody keeps at most 10,000 items per archive
#: (storage_archive_item_limit), uploads included: slot request 10,001 within the
#: 7 days files are kept would fail with undefined-condition.
SHARE_CONFIG = """\
http_default_host = "share.localhost"
storage_archive_item_limit = 10000000"""


#: httpupload settings raised for the benchmark, set only if this version knows them.
#: The slot rounds ask thousands of slots per account and never use them, and the
#: transfers move far more than a day's budget: per-user quotas off (0), as
#: Prosody's daily quota is lifted (tests/integration/prosody.py).
HTTPUPLOAD_OVERRIDES: dict[str, dict[str, Any]] = {
    "http": {"max_uploads_per_address": 1000},
    "quotas": {"bytes_per_window": 0, "pending_slots": 0},
}


@dataclass(frozen=True)
class Sizes:
    slots: dict[int, int]  # concurrency -> requests
    small_count: int
    small_size: int
    large_size: int
    fan_count: int
    fan_size: int
    repeat: int = 3  # slot and small-file rounds; the median counts


FULL = Sizes(
    slots={1: 500, 8: 1000, 32: 2000},
    small_count=200,
    small_size=MIB,
    large_size=GIB,
    fan_count=200,
    fan_size=10 * MIB,
)
QUICK = Sizes(
    slots={1: 300, 8: 600, 32: 900},
    small_count=50,
    small_size=MIB,
    large_size=64 * MIB,
    fan_count=50,
    fan_size=10 * MIB,
    repeat=1,
)


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- memory


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmRSS") for p in process_tree(pid))


def hwm_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmHWM") for p in process_tree(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid and its descendants so far."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """TcpExt ListenOverflows: connections dropped because a backlog was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split(), values.split(), strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


def durable_write_ms(folder: Path, size: int, rounds: int = 30) -> float:
    """Median ms to write size bytes, fsync, rename and fsync the folder."""
    data = os.urandom(size)
    times = []
    probe = folder / "fsync-probe"
    probe.mkdir(exist_ok=True)
    for i in range(rounds):
        began = time.monotonic()
        path = probe / f"tmp-{i}"
        with open(path, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(path, probe / f"file-{i}")
        fd = os.open(probe, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append(time.monotonic() - began)
    shutil.rmtree(probe, ignore_errors=True)
    return statistics.median(times) * 1000


def reset_hwm(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: clear_refs 5)."""
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{p}/clear_refs").write_text("5")


# ---------------------------------------------------------------- slot clients


class SlotClients:
    """The same pool of slixmpp processes, for one XMPP service."""

    def __init__(
        self, processes: int, port: int, service: str, log_dir: Path, name: str
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for index in range(processes):
            stderr = open(log_dir / f"slotload-{name}-{index}.log", "ab")
            command = [
                sys.executable, str(HERE / "slotload.py"),
                "--jid", f"{USER}@{DOMAIN}", f"--password={PASSWORD}",
                "--port", str(port), "--service", service,
                "--tag", f"{name}-{index}",
            ]  # fmt: skip
            self.procs.append(
                subprocess.Popen(  # noqa: S603
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    bufsize=1,
                )
            )
            stderr.close()
        for proc in self.procs:
            self._read(proc)

    def _read(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"slot client {proc.pid} exited ({proc.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def _send(self, proc: subprocess.Popen[str], command: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()

    def load(self, requests: int, concurrency: int) -> dict[str, float]:
        """Send requests slot requests with concurrency in flight, over the pool."""
        used = self.procs[: min(len(self.procs), concurrency)]
        lanes = [concurrency // len(used)] * len(used)
        for i in range(concurrency % len(used)):
            lanes[i] += 1
        counts = [requests * lane // concurrency for lane in lanes]
        counts[0] += requests - sum(counts)
        for proc, lane, count in zip(used, lanes, counts, strict=True):
            self._send(proc, {"op": "load", "n": count, "concurrency": lane})
        results = [self._read(proc) for proc in used]
        latencies = sorted(x for r in results for x in r["latencies"])
        errors = [e for r in results for e in r["errors"]]
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        if errors:
            log(f"  {len(errors)} slot requests failed, e.g. {errors[0]}")
        return {
            "rate": len(latencies) / wall,
            "p50": percentile(latencies, 50) * 1000,
            "p95": percentile(latencies, 95) * 1000,
            "errors": len(errors),
        }

    def login(self, user: str) -> None:
        """Log every client of the pool out, and in again as user."""
        for proc in self.procs:
            command = {"op": "login", "jid": f"{user}@{DOMAIN}", "password": PASSWORD}
            self._send(proc, command)
        for proc in self.procs:
            self._read(proc)

    def slots(self, files: list[tuple[str, int]]) -> list[dict[str, Any]]:
        proc = self.procs[0]
        self._send(proc, {"op": "slots", "files": files, "concurrency": 8})
        slots: list[dict[str, Any]] = self._read(proc)["slots"]
        return slots

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(pct / 100 * len(values) + 0.5) - 1))
    return values[rank]


# ---------------------------------------------------------------- services


@dataclass
class Service:
    """One contestant: how to get PUT/GET URLs, and which process to watch."""

    name: str
    pid: Callable[[], int]
    clients: SlotClients | None = None  # None: plain HTTP (nginx), no slots
    direct_url: Callable[[str], str] | None = None
    results: dict[str, Any] = field(default_factory=dict)
    peak_kib: int = 0
    #: Processes whose CPU time a slot request costs, by label (default: pid()).
    cpu_parts: Callable[[], dict[str, int]] | None = None

    def cpu(self) -> dict[str, float]:
        parts = self.cpu_parts() if self.cpu_parts else {self.name: self.pid()}
        return {label: cpu_seconds(pid) for label, pid in parts.items()}

    def note_peak(self) -> None:
        self.peak_kib = max(self.peak_kib, hwm_kib(self.pid()))

    def targets(self, files: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """PUT/GET URLs and PUT headers for these (name, size) files."""
        if self.clients is not None:
            return self.clients.slots(files)
        assert self.direct_url is not None
        return [
            {"put": self.direct_url(n), "get": self.direct_url(n), "headers": {}}
            for n, _ in files
        ]


def _known_keys(source: Path) -> dict[str, list[str]]:
    """The config tables and keys the httpupload code in source knows."""
    probe = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from httpupload.config import KNOWN_KEYS; print(json.dumps(KNOWN_KEYS))"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe, str(source)],
        capture_output=True,
        text=True,
        check=True,
    )
    known: dict[str, list[str]] = json.loads(done.stdout)
    return known


@contextlib.contextmanager
def servers(
    work: Path, which: list[str], processes: int, source: Path, round_users: list[str]
) -> Iterator[list[Service]]:
    """Start every server of the run; yield the services."""
    stack = contextlib.ExitStack()
    services: list[Service] = []
    users = {user: PASSWORD for user in [USER, *round_users]}
    log_dir = work / "logs"
    log_dir.mkdir(exist_ok=True)
    try:
        if "httpupload" in which:
            px = BenchProsody(
                components={"upload.localhost": COMPONENT_SECRET},
                users=dict(users),
                base_dir=work / "prosody-for-httpupload",
                extra_config=STOCK,
            )
            stack.callback(px.cleanup)
            px.setup()
            px.start()
            http_port = free_port()
            listen = f"tcp:{http_port}:interface=127.0.0.1:backlog={BACKLOG}"
            known = _known_keys(source)
            overrides = {
                table: {k: v for k, v in values.items() if k in known.get(table, ())}
                for table, values in HTTPUPLOAD_OVERRIDES.items()
            }
            overrides["http"] = {**overrides.get("http", {}), "listen": listen}
            hu = BenchHttpUpload(
                http_port=http_port,
                server_port=px.component_port,
                secret=COMPONENT_SECRET,
                component_jid="upload.localhost",
                domains=[DOMAIN],
                max_file_size=SIZE_LIMIT,
                base_dir=work / "httpupload",
                overrides=overrides,
                source=None if source == REPO else source,
                known_keys=known,
            )
            stack.callback(hu.cleanup)
            hu.setup()
            hu.start()
            services.append(
                Service(
                    "httpupload",
                    lambda hu=hu: _pid(hu.process),
                    cpu_parts=lambda hu=hu, px=px: {
                        "twistd": _pid(hu.process),
                        "its Prosody": _pid(px.process),
                    },
                )
            )
            services[-1].clients = SlotClients(
                processes, px.c2s_port, "upload.localhost", log_dir, "httpupload"
            )
            stack.callback(services[-1].clients.close)
        for name, extra in (("prosody", STOCK), ("prosody-tuned", TUNED)):
            if name not in which:
                continue
            ps = ShareProsody(
                components={},
                users=dict(users),
                share_component="share.localhost",
                share_size_limit=SIZE_LIMIT,
                # Requests to 127.0.0.1 (not share.localhost) go to the share.
                extra_config="\n".join([SHARE_CONFIG, extra]),
                base_dir=work / name,
            )
            stack.callback(ps.cleanup)
            ps.setup()
            ps.start()
            service = Service(name, lambda ps=ps: _pid(ps.process))
            service.clients = SlotClients(
                processes, ps.c2s_port, "share.localhost", log_dir, name
            )
            stack.callback(service.clients.close)
            services.append(service)
        if "ejabberd" in which:
            ej = Ejabberd(users=dict(users), base_dir=work / "ejabberd")
            stack.callback(ej.cleanup)
            ej.setup()
            ej.start()
            service = Service("ejabberd", lambda ej=ej: ej.pid)
            service.clients = SlotClients(
                processes, ej.c2s_port, "upload.localhost", log_dir, "ejabberd"
            )
            stack.callback(service.clients.close)
            services.append(service)
        if "nginx" in which:
            ng = Nginx(base_dir=work / "nginx")
            stack.callback(ng.cleanup)
            ng.setup()
            ng.start()
            services.append(Service("nginx", lambda ng=ng: ng.pid, direct_url=ng.url))
        yield services
    finally:
        stack.close()


def _pid(process: subprocess.Popen[bytes] | None) -> int:
    if process is None or process.poll() is not None:
        raise RuntimeError("server process is not running")
    return process.pid


# ---------------------------------------------------------------- phases


Workload = Callable[[], tuple[float, str]]  # runs; returns seconds and a speed


@dataclass(frozen=True)
class Files:
    small: Path
    large: Path
    fan: Path


def make_file(path: Path, size: int) -> Path:
    """A file of random bytes (incompressible), written in 4 MiB chunks."""
    if path.exists() and path.stat().st_size == size:
        return path
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = min(left, 4 * MIB)
            out.write(os.urandom(chunk))
            left -= chunk
    return path


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def put_get(
    service: Service,
    path: Path,
    size: int,
    count: int,
    concurrency: int,
    tag: str,
) -> tuple[float, float, list[dict[str, Any]]]:
    """PUT count copies of path, then GET them all back; MB/s of both."""
    files = [(f"{tag}-{i}.bin", size) for i in range(count)]
    slots = service.targets(files)
    puts = [
        Transfer(
            "PUT",
            s["put"],
            path,
            {"Content-Type": "application/octet-stream", **s["headers"]},
        )
        for s in slots
    ]
    os.sync()
    seconds, _ = run_batch(puts, concurrency)
    put_rate = mbps(size * count, seconds)
    gets = [Transfer("GET", s["get"], expect_size=size) for s in slots]
    seconds, _ = run_batch(gets, concurrency)
    return put_rate, mbps(size * count, seconds), slots


def round_user(index: int) -> str:
    return f"round{index}"


def phase_slots(services: list[Service], sizes: Sizes, files: Files) -> None:
    """Slot requests at each concurrency, the services taking turns, repeated.

    Each round is asked by an account of its own: on a busy server slot requests
    come from many users, and every service keeps per-user accounts of what each
    asked for (quotas). The other measurements use the account USER.
    """
    xmpp = [s for s in services if s.clients is not None]
    for s in xmpp:
        assert s.clients is not None
        s.clients.load(200, 8)  # warm-up: TLS sessions, caches
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    rounds = 0
    for rep in range(sizes.repeat):
        for concurrency, count in sizes.slots.items():
            for s in xmpp:
                assert s.clients is not None
                s.clients.login(round_user(rounds))
            rounds += 1
            for s in xmpp:
                assert s.clients is not None
                cpu_before = s.cpu()
                r = s.clients.load(count, concurrency)
                cpu_after = s.cpu()
                done = max(1, count - r["errors"])
                r["cpu_us"] = {
                    label: (cpu_after[label] - cpu_before[label]) / done * 1e6
                    for label in cpu_before
                }
                log(
                    f"{s.name}: slots c={concurrency} #{rep + 1}: {r['rate']:.0f}/s "
                    f"p50 {r['p50']:.2f} ms p95 {r['p95']:.2f} ms"
                )
                runs.setdefault((s.name, concurrency), []).append(r)
                s.note_peak()
    for s in xmpp:
        assert s.clients is not None
        s.clients.login(USER)
        for concurrency in sizes.slots:
            got = runs[(s.name, concurrency)]
            s.results[f"slots_c{concurrency}"] = {
                key: statistics.median(r[key] for r in got)
                for key in ("rate", "p50", "p95")
            } | {
                "errors": sum(r["errors"] for r in got),
                "cpu_us": {
                    label: statistics.median(r["cpu_us"][label] for r in got)
                    for label in got[0]["cpu_us"]
                },
                "runs": got,
            }


def phase_small(services: list[Service], sizes: Sizes, files: Files) -> None:
    """Small files PUT then GET, one at a time and 8 at a time, repeated."""
    for s in services:  # warm-up
        put_get(s, files.small, sizes.small_size, 8, 8, "warm")
    runs: dict[str, list[float]] = {}
    for rep in range(sizes.repeat):
        for concurrency in (1, 8):
            for s in services:
                put, get, _ = put_get(
                    s,
                    files.small,
                    sizes.small_size,
                    sizes.small_count,
                    concurrency,
                    f"small-c{concurrency}-{rep}",
                )
                log(
                    f"{s.name}: {sizes.small_count} x small c={concurrency} "
                    f"#{rep + 1}: PUT {put:.0f} MB/s, GET {get:.0f} MB/s"
                )
                runs.setdefault(f"{s.name} small_put_c{concurrency}", []).append(put)
                runs.setdefault(f"{s.name} small_get_c{concurrency}", []).append(get)
                s.note_peak()
    for s in services:
        for key, values in runs.items():
            name, metric = key.split(" ")
            if name == s.name:
                s.results[metric] = statistics.median(values)
                s.results[metric + "_runs"] = values


def phase_large(services: list[Service], sizes: Sizes, files: Files) -> None:
    """One large file PUT then GET; the peak RSS during the PUT."""
    for s in services:
        s.note_peak()
        reset_hwm(s.pid())
        s.results["rss_before_large"] = rss_kib(s.pid()) / 1024
        log(f"{s.name}: PUT {sizes.large_size // MIB} MiB ...")
        put, get, _ = put_get(s, files.large, sizes.large_size, 1, 1, "large")
        s.results["large_put"] = put
        s.results["large_get"] = get
        s.results["rss_peak_large"] = hwm_kib(s.pid()) / 1024
        log(
            f"{s.name}: large PUT {put:.0f} MB/s, GET {get:.0f} MB/s, "
            f"peak RSS {s.results['rss_peak_large']:.1f} MiB"
        )
        s.note_peak()


def phase_fanout(services: list[Service], sizes: Sizes, files: Files) -> None:
    """Many concurrent downloads of one file; every one must complete."""
    for s in services:
        slot = s.targets([("fan.bin", sizes.fan_size)])[0]
        headers = {"Content-Type": "application/octet-stream", **slot["headers"]}
        run_batch([Transfer("PUT", slot["put"], files.fan, headers)])
        gets = [Transfer("GET", slot["get"], expect_size=sizes.fan_size)]
        overflows = listen_overflows()
        seconds, _ = run_batch(gets * sizes.fan_count, sizes.fan_count)
        overflows = listen_overflows() - overflows
        rate = mbps(sizes.fan_size * sizes.fan_count, seconds)
        s.results["fan_get"] = rate
        s.results["fan_listen_overflows"] = overflows
        log(
            f"{s.name}: {sizes.fan_count} concurrent GETs: {rate:.0f} MB/s "
            f"({overflows} connections dropped by a full listen backlog)"
        )
        s.note_peak()


PHASES: dict[str, Callable[[list[Service], Sizes, Files], None]] = {
    "slots": phase_slots,
    "small": phase_small,
    "large": phase_large,
    "fanout": phase_fanout,
}
SERVICES = ["httpupload", "prosody", "prosody-tuned", "ejabberd", "nginx"]


def run(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    if args.large_mib:
        sizes = Sizes(**{**sizes.__dict__, "large_size": args.large_mib * MIB})
    if args.repeat:
        sizes = Sizes(**{**sizes.__dict__, "repeat": args.repeat})
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="httpupload-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC)
    log(f"work folder {work}")
    log(f"writing the test files ({sizes.large_size // MIB} MiB and smaller)")
    files = Files(
        small=make_file(work / "small.bin", sizes.small_size),
        large=make_file(work / "large.bin", sizes.large_size),
        fan=make_file(work / "fan.bin", sizes.fan_size),
    )
    disk_ms = durable_write_ms(work, sizes.small_size)
    log(f"durable {sizes.small_size // MIB} MiB write on this disk: {disk_ms:.1f} ms")
    which = [name for name in SERVICES if name in (args.only or SERVICES)]
    if "httpupload" not in which:
        which = ["httpupload", *which]
    profile_text = ""
    try:
        if args.rev:  # pin it: HEAD may move while we run
            args.rev = resolve(args.rev)
        source = checkout(args.rev, work) if args.rev else REPO
        rounds = [round_user(i) for i in range(sizes.repeat * len(sizes.slots))]
        with servers(work, which, args.clients, source, rounds) as services:
            time.sleep(2)
            for s in services:
                s.results["rss_idle"] = rss_kib(s.pid()) / 1024
                s.note_peak()
            log("servers up: " + ", ".join(f"{s.name} pid {s.pid()}" for s in services))
            for name in args.phases:
                PHASES[name](services, sizes, files)
            for s in services:
                s.note_peak()
                s.results["rss_peak"] = s.peak_kib / 1024
            if args.profile:
                profile_text = profile_httpupload(
                    services[0], files, sizes, work, source
                )
    except TransferError as exc:
        log(f"a transfer failed: {exc}")
        return 1
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - began
    command = "bench/run " + " ".join(args.argv)
    header = report.header(
        started_at, command.strip(), elapsed, sizes_text(sizes), args.rev
    )
    table = report.table(services, sizes)
    notes = report.notes(services, sizes, disk_ms)
    verdict = report.targets(services)
    text = "\n".join([header, "", table, "", notes, "", verdict])
    print(text)
    if profile_text:
        print()
        print(profile_text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({s.name: s.results for s in services}, indent=2, sort_keys=True)
        )
    if args.write_docs:
        report.write_docs(REPO / "docs" / "benchmarks.md", text, profile_text)
        log("wrote docs/benchmarks.md")
    return 0


def resolve(rev: str) -> str:
    """The full commit id of a revision."""
    done = subprocess.run(  # noqa: S603
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def checkout(rev: str, work: Path) -> Path:
    """The files of a commit (git archive) in work/source."""
    target = work / "source"
    git = ["git", "-C", str(REPO)]
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    archive = subprocess.run(  # noqa: S603
        [*git, "archive", "--format=tar", rev],
        capture_output=True,
        check=True,
    )
    subprocess.run(  # noqa: S603
        ["tar", "-x", "-C", str(target)],  # noqa: S607
        input=archive.stdout,
        check=True,
    )
    log(f"httpupload from {rev} in {target}")
    return target


def sizes_text(sizes: Sizes) -> str:
    slots = ", ".join(f"{n} at c={c}" for c, n in sizes.slots.items())
    return (
        f"slot requests: {slots}; small files: {sizes.small_count} x "
        f"{sizes.small_size // MIB} MiB; large file: {sizes.large_size // MIB} MiB; "
        f"fan-out: {sizes.fan_count} concurrent GETs of {sizes.fan_size // MIB} MiB; "
        f"slots and small files: median of {sizes.repeat} rounds"
    )


# ---------------------------------------------------------------- profile


def profile_httpupload(
    service: Service, files: Files, sizes: Sizes, work: Path, source: Path
) -> str:
    """httpupload's twistd under py-spy: large PUT and GET, small PUTs, slots."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return "profile: py-spy not installed (bench/run --profile installs it)"
    large = service.targets([("profiled.bin", sizes.large_size)])[0]
    small = service.targets(
        [(f"profiled-{i}.bin", sizes.small_size) for i in range(sizes.small_count)]
    )
    kind = {"Content-Type": "application/octet-stream"}

    def transfers(batch: list[Transfer], parallel: int, nbytes: int) -> Workload:
        def go() -> tuple[float, str]:
            seconds, _ = run_batch(batch, parallel)
            return seconds, f"{mbps(nbytes, seconds):.0f} MB/s"

        return go

    def slot_requests(count: int, concurrency: int) -> Workload:
        def go() -> tuple[float, str]:
            assert service.clients is not None
            r = service.clients.load(count, concurrency)
            return count / r["rate"], f"{r['rate']:.0f} slots/s"

        return go

    slots_count = sizes.slots[8]
    workloads: list[tuple[str, Workload]] = [
        (
            f"one {sizes.large_size // MIB} MiB PUT",
            transfers(
                [Transfer("PUT", large["put"], files.large, kind | large["headers"])],
                1,
                sizes.large_size,
            ),
        ),
        (
            f"one {sizes.large_size // MIB} MiB GET",
            transfers(
                [Transfer("GET", large["get"], expect_size=sizes.large_size)],
                1,
                sizes.large_size,
            ),
        ),
        (
            f"{sizes.small_count} x {sizes.small_size // MIB} MiB PUT, 8 at a time",
            transfers(
                [
                    Transfer("PUT", slot["put"], files.small, kind | slot["headers"])
                    for slot in small
                ],
                8,
                sizes.small_size * sizes.small_count,
            ),
        ),
        (f"{slots_count} slot requests, 8 in flight", slot_requests(slots_count, 8)),
    ]
    summaries = []
    for index, (label, workload) in enumerate(workloads):
        raw = work / f"profile-{index}.txt"
        command = [
            pyspy, "record", "--pid", str(service.pid()), "--rate", str(report.RATE),
            "--format", "raw", "--output", str(raw), "--threads", "--idle",
            "--nonblocking",
        ]  # fmt: skip
        spy = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(1.5)  # py-spy attaches
        os.sync()
        seconds, speed = workload()
        spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        _, err = spy.communicate(timeout=60)
        if not raw.exists():
            text = err.decode(errors="replace")[-500:]
            summaries.append(f"profile of {label}: py-spy wrote nothing: {text}")
            continue
        keep = Path(tempfile.gettempdir()) / f"httpupload-bench-profile-{index}.txt"
        shutil.copy(raw, keep)
        summaries.append(
            report.profile_summary(raw.read_text(), label, seconds, speed, keep, source)
        )
    return "\n\n".join(summaries)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (~2 min)")
    parser.add_argument(
        "--clients",
        type=int,
        default=2,
        help="slixmpp processes per XMPP service (default 2)",
    )
    parser.add_argument(
        "--large-mib", type=int, default=0, help="size of the large file in MiB"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="rounds of the slot and small-file measurements (median; default 3)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SERVICES,
        help="run only these services (httpupload always runs)",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=list(PHASES),
        default=list(PHASES),
        help="run only these measurements (default: all)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile httpupload's twistd with py-spy: a large PUT and its GET, "
        "small PUTs, slot requests",
    )
    parser.add_argument(
        "--rev",
        help="benchmark httpupload as committed in this git revision (e.g. HEAD) "
        "instead of the working tree",
    )
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="put the table into docs/benchmarks.md",
    )
    parser.add_argument("--work-dir", help="keep files and logs in this folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    args.argv = argv
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
