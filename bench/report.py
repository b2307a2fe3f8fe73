"""The benchmark's printed table, the check against issue 3's targets, the profile."""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def _run(*command: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, timeout=20, check=False
        )
    except OSError:
        return "?"
    return done.stdout.strip() or "?"


def _package(name: str) -> str:
    return _run("dpkg-query", "-W", "-f", "${Version}", name)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        ram = f"{pages / 1024**3:.0f} GiB RAM"
    except (ValueError, OSError):
        ram = "? RAM"
    debian = "?"
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {ram}; Debian {debian}, "
        f"Linux {platform.release()}"
    )


def commit(rev: str | None) -> str:
    """The short commit benchmarked; the working tree's, marked if edited."""
    repo = Path(__file__).resolve().parents[1]
    found = _run("git", "-C", str(repo), "rev-parse", "--short", rev or "HEAD")
    if rev is None:
        dirty = _run(
            "git", "-C", str(repo), "status", "--porcelain", "--", "httpupload"
        )
        if dirty != "?":
            found += " + uncommitted changes"
    return found


def versions(rev: str | None) -> str:
    import twisted

    return (
        f"httpupload {commit(rev)} (Python {platform.python_version()}, "
        f"Twisted {twisted.__version__}); Prosody {_package('prosody')}; "
        f"ejabberd {_package('ejabberd')}; nginx {_package('nginx')}; "
        f"curl {_package('curl')}"
    )


def header(
    started: datetime.datetime,
    command: str,
    seconds: float,
    sizes: str,
    rev: str | None,
) -> str:
    return "\n".join(
        [
            f"date:     {started.strftime('%Y-%m-%d %H:%M UTC')}",
            f"machine:  {machine()}",
            f"software: {versions(rev)}",
            f"command:  {command}  (took {seconds / 60:.1f} min)",
            f"sizes:    {sizes}",
        ]
    )


# ---------------------------------------------------------------- table

#: (label, result key, field or None, format, higher is better)
ROWS: list[tuple[str, str, str | None, str, bool]] = [
    ("slots/s       c=1", "slots_c1", "rate", "{:.0f}", True),
    ("  p50 ms      c=1", "slots_c1", "p50", "{:.2f}", False),
    ("  p95 ms      c=1", "slots_c1", "p95", "{:.2f}", False),
    ("slots/s       c=8", "slots_c8", "rate", "{:.0f}", True),
    ("  p50 ms      c=8", "slots_c8", "p50", "{:.2f}", False),
    ("  p95 ms      c=8", "slots_c8", "p95", "{:.2f}", False),
    ("slots/s       c=32", "slots_c32", "rate", "{:.0f}", True),
    ("  p50 ms      c=32", "slots_c32", "p50", "{:.2f}", False),
    ("  p95 ms      c=32", "slots_c32", "p95", "{:.2f}", False),
    ("PUT small MB/s c=1", "small_put_c1", None, "{:.0f}", True),
    ("PUT small MB/s c=8", "small_put_c8", None, "{:.0f}", True),
    ("GET small MB/s c=1", "small_get_c1", None, "{:.0f}", True),
    ("GET small MB/s c=8", "small_get_c8", None, "{:.0f}", True),
    ("PUT large MB/s", "large_put", None, "{:.0f}", True),
    ("GET large MB/s", "large_get", None, "{:.0f}", True),
    ("GET fan-out MB/s", "fan_get", None, "{:.0f}", True),
    ("RSS idle MiB", "rss_idle", None, "{:.1f}", False),
    ("RSS peak in large PUT", "rss_peak_large", None, "{:.1f}", False),
    ("RSS peak, whole run", "rss_peak", None, "{:.1f}", False),
]


def value(results: dict[str, Any], key: str, part: str | None) -> float | None:
    found = results.get(key)
    if found is None:
        return None
    if part is not None:
        found = found.get(part)
    return None if found is None else float(found)


def _fmt(number: float | None, pattern: str) -> str:
    if number is None or math.isnan(number):
        return "-"
    return pattern.format(number)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0 or math.isnan(ours + theirs):
        return "-"
    return f"{ours / theirs:.2f}"


def table(services: list[Any], sizes: Any) -> str:
    """The results, one column per service; after each peer, httpupload ÷ peer."""
    base = services[0]
    heads = ["", base.name]
    for s in services[1:]:
        heads += [s.name, "÷"]
    rows = [heads]
    for label, key, part, pattern, _ in ROWS:
        label = label.replace("small", f"{sizes.small_size // MIB}M")
        label = label.replace("large", _size(sizes.large_size))
        label = label.replace("fan-out", f"{sizes.fan_count}x{sizes.fan_size // MIB}M")
        ours = value(base.results, key, part)
        row = [label, _fmt(ours, pattern)]
        for s in services[1:]:
            theirs = value(s.results, key, part)
            row += [_fmt(theirs, pattern), _ratio(ours, theirs)]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("-" * len(lines[0]))
    lines.append("")
    lines.append(
        "÷ = httpupload's value divided by that service's: above 1 means httpupload "
        "is faster (MB/s, slots/s) or slower/larger (ms, MiB)."
    )
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    if nbytes >= 1024 * MIB and nbytes % (1024 * MIB) == 0:
        return f"{nbytes // (1024 * MIB)}G"
    return f"{nbytes // MIB}M"


def notes(services: list[Any], sizes: Any, disk_ms: float) -> str:
    """What the table does not show: server CPU per slot, failures, the disk."""
    lines = ["server CPU per slot request (median of the rounds):"]
    for c in sizes.slots:
        parts = []
        for s in services:
            cpu = (s.results.get(f"slots_c{c}") or {}).get("cpu_us")
            if not cpu:
                continue
            total = sum(cpu.values())
            if len(cpu) > 1:
                inner = " + ".join(f"{label} {us:.0f}" for label, us in cpu.items())
                parts.append(f"{s.name} {total:.0f} µs ({inner})")
            else:
                parts.append(f"{s.name} {total:.0f} µs")
        if parts:
            lines.append(f"  c={c}: " + ", ".join(parts))
    failed = [
        f"{s.name} {s.results[f'slots_c{c}']['errors']} at c={c}"
        for s in services
        for c in sizes.slots
        if (s.results.get(f"slots_c{c}") or {}).get("errors")
    ]
    lines.append("failed slot requests: " + (", ".join(failed) or "none"))
    dropped = [
        f"{s.name} {s.results['fan_listen_overflows']}"
        for s in services
        if s.results.get("fan_listen_overflows")
    ]
    lines.append(
        "connections dropped by a full listen backlog in the fan-out: "
        + (", ".join(dropped) or "none")
    )
    size = sizes.small_size
    lines.append(
        f"durable {size // MIB} MiB write on this disk (write, fsync, rename, fsync "
        f"the folder; median): {disk_ms:.1f} ms, at most "
        f"{size / (disk_ms / 1000) / 1e6:.0f} MB/s one file at a time; only "
        "httpupload waits for that before answering 201"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- targets


def targets(services: list[Any]) -> str:
    """Issue 3's targets, each as a ratio in this run: met or missed."""
    by = {s.name: s.results for s in services}
    hu = by["httpupload"]
    checks: list[tuple[str, float | None, float]] = []

    def ratio(key: str, peer: str, part: str | None = None) -> float | None:
        if peer not in by:
            return None
        ours, theirs = value(hu, key, part), value(by[peer], key, part)
        if ours is None or not theirs:
            return None
        return ours / theirs

    checks.append(("large GET >= ejabberd's", ratio("large_get", "ejabberd"), 1.0))
    checks.append(("large PUT >= 0.5 x nginx's", ratio("large_put", "nginx"), 0.5))
    checks.append(
        ("large PUT >= 5 x tuned Prosody's", ratio("large_put", "prosody-tuned"), 5.0)
    )
    for method in ("put", "get"):
        for c in (1, 8):
            checks.append(
                (
                    f"small {method.upper()} c={c} >= 0.75 x ejabberd's",
                    ratio(f"small_{method}_c{c}", "ejabberd"),
                    0.75,
                )
            )
    for peer in ("prosody", "prosody-tuned"):
        for c in (1, 8, 32):
            checks.append(
                (
                    f"slots/s c={c} >= {peer}'s",
                    ratio(f"slots_c{c}", peer, "rate"),
                    1.0,
                )
            )
    lines = ["targets (issue 3), httpupload vs the peer in this run:"]
    for label, got, need in checks:
        if got is None:
            lines.append(f"  [ n/a ] {label}")
            continue
        mark = "met" if got >= need else "MISSED"
        shown = f"{got:.3f}" if got < need <= round(got, 2) else f"{got:.2f}"
        lines.append(f"  [{mark:^6}] {label}: {shown} (need {need:g})")
    idle, peak = hu.get("rss_idle"), hu.get("rss_peak_large")
    if idle is not None and peak is not None:
        mark = "met" if peak - idle <= 32 else "MISSED"
        lines.append(
            f"  [{mark:^6}] peak RSS in the large PUT <= idle + 32 MiB: "
            f"{peak:.1f} - {idle:.1f} = {peak - idle:+.1f} MiB"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- profile

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
#: Frames on top of the stack while a thread waits: epoll, or a pool thread's queue.
_IDLE = ("EPollReactor.doPoll", "Condition.wait")
RATE = 200  # py-spy samples per second, as bench/benchmark.py asks for


def _frame(frame: str, with_line: bool, source: Path | None = None) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    where = f"{path}:{match['line']}" if with_line and match["line"] else path
    text = f"{match['func']} ({where})"
    if with_line and path.startswith("httpupload/") and match["line"]:
        code = _source_line(source, path, int(match["line"]))
        if code:
            text += f"  `{code}`"
    return text


def _source_line(source: Path | None, path: str, line: int) -> str:
    root = source or Path(__file__).resolve().parents[1]
    try:
        text = (root / path).read_text(encoding="utf-8")
        return text.splitlines()[line - 1].strip()[:60]
    except (OSError, IndexError):
        return ""


def profile_summary(
    raw: str, label: str, seconds: float, speed: str, keep: Path, source: Path
) -> str:
    """Where httpupload's threads spent a workload's wall time (py-spy raw stacks).

    Samples are taken at RATE per second from every thread, idle or not; busy
    samples are those whose top frame is not a wait. Shares are of the transfer's
    wall time (seconds * RATE samples per thread), so a thread busy all along is
    at 100 % whatever else it did before or after.
    """
    window = max(seconds * RATE, 1.0)
    busy: dict[str, Counter[str]] = {"reactor": Counter(), "pool": Counter()}
    ours: dict[str, Counter[str]] = {"reactor": Counter(), "pool": Counter()}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith("thread") else ""
        frames = frames[1:] if thread else frames
        if not frames or any(frames[-1].startswith(idle) for idle in _IDLE):
            continue
        group = "reactor" if "MainThread" in thread else "pool"
        busy[group][_frame(frames[-1], True, source)] += int(count_text)
        for name in {_frame(f, with_line=False) for f in frames}:
            if "(httpupload/" in name:
                ours[group][name] += int(count_text)
    lines = [
        f"py-spy, httpupload's twistd during {label}: {seconds:.2f} s, "
        f"{speed} (shares of that wall time; raw stacks in {keep})"
    ]
    names = {"reactor": "reactor thread", "pool": "thread pool (all threads)"}
    for group, counter in busy.items():
        total = sum(counter.values())
        lines.append(f"  {names[group]}: busy {100 * total / window:.0f} %")
        for name, count in counter.most_common(6):
            share = 100 * count / window
            if share >= 1:
                lines.append(f"    {share:5.1f} %  {name}")
        inclusive = [
            f"{name.split(' (')[0]} {100 * count / window:.0f} %"
            for name, count in ours[group].most_common(5)
            if 100 * count / window >= 1
        ]
        if inclusive:
            lines.append("    httpupload's code, inclusive: " + ", ".join(inclusive))
    return "\n".join(lines)


# ---------------------------------------------------------------- docs


def write_docs(
    path: Path, text: str, profile: str = "", begin: str = BEGIN, end: str = END
) -> None:
    """Replace the text between a doc's markers (docs/benchmarks.md's by default)."""
    block = "```\n" + text + ("\n\n" + profile if profile else "") + "\n```"
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in doc and end in doc:
        before, rest = doc.split(begin, 1)
        _, after = rest.split(end, 1)
        doc = f"{before}{begin}\n{block}\n{end}{after}"
    else:
        doc += f"\n{begin}\n{block}\n{end}\n"
    path.write_text(doc, encoding="utf-8")
