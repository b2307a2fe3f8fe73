"""PUTs and GETs with curl, the one HTTP client of the benchmark.

curl streams a PUT body from the file (``--upload-file``) and writes a GET body to
``/dev/null``: it never holds a file in memory, so it measures the server, not
itself. A batch of transfers is one curl process reading a config file (one block
per transfer, separated by ``next``), sequential on one kept-alive connection, or
``--parallel --parallel-max N`` for N at a time. Every transfer sends
``Expect:`` (empty: no ``100-continue`` round trip, which some servers never answer
and curl then waits a second for) and the slot's headers.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CURL = "curl"
WRITE_OUT = "%{http_code} %{size_upload} %{size_download} %{time_total} %{url}\\n"


class TransferError(Exception):
    """A transfer in a batch did not succeed."""


@dataclass
class Transfer:
    method: str  # "PUT" or "GET"
    url: str
    path: Path | None = None  # the body of a PUT
    headers: dict[str, str] = field(default_factory=dict)
    expect_size: int | None = None  # bytes a GET must return


@dataclass
class Result:
    status: int
    uploaded: int
    downloaded: int
    seconds: float
    url: str


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _block(transfer: Transfer) -> list[str]:
    lines = [f"url = {_quote(transfer.url)}", 'output = "/dev/null"']
    lines.append(f"write-out = {_quote(WRITE_OUT)}")
    lines.append('header = "Expect:"')
    for name, value in transfer.headers.items():
        lines.append(f"header = {_quote(f'{name}: {value}')}")
    if transfer.method == "PUT":
        if transfer.path is None:
            raise ValueError("a PUT needs a file")
        lines.append(f"upload-file = {_quote(str(transfer.path))}")
    elif transfer.method != "GET":
        raise ValueError(f"unsupported method {transfer.method}")
    return lines


def run_batch(
    transfers: list[Transfer], parallel: int = 1, timeout: float = 1800.0
) -> tuple[float, list[Result]]:
    """Run the transfers with one curl process; return wall seconds and results.

    Raises TransferError unless every transfer got a 2xx and, for a GET with
    ``expect_size``, that many bytes.
    """
    blocks = ["\n".join(_block(t)) for t in transfers]
    with tempfile.NamedTemporaryFile(
        "w", prefix="bench-curl-", suffix=".cfg", delete=False
    ) as config:
        config.write("\nnext\n".join(blocks) + "\n")
        config_path = Path(config.name)
    command = [CURL, "--silent", "--show-error", "--config", str(config_path)]
    if parallel > 1:
        command[1:1] = ["--parallel", "--parallel-immediate"]
        command[1:1] = ["--parallel-max", str(parallel)]
    try:
        began = time.monotonic()
        done = subprocess.run(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.monotonic() - began
    finally:
        config_path.unlink(missing_ok=True)
    results = []
    for line in done.stdout.decode().splitlines():
        code, up, down, total, url = line.split(" ", 4)
        results.append(Result(int(code), int(up), int(down), float(total), url))
    if done.returncode != 0 or len(results) != len(transfers):
        raise TransferError(
            f"curl exited {done.returncode} with {len(results)} of "
            f"{len(transfers)} results: {done.stderr.decode(errors='replace')[-2000:]}"
        )
    bad = [r for r in results if not 200 <= r.status < 300]
    if bad:
        raise TransferError(f"{len(bad)} of {len(results)} failed, e.g. {bad[0]}")
    if parallel <= 1:  # sequential: results are in order
        for transfer, result in zip(transfers, results, strict=True):
            if (
                transfer.expect_size is not None
                and result.downloaded != transfer.expect_size
            ):
                raise TransferError(
                    f"GET {transfer.url[:60]}… returned {result.downloaded} bytes, "
                    f"not {transfer.expect_size}"
                )
    else:
        sizes = {t.expect_size for t in transfers if t.method == "GET"}
        if len(sizes) == 1 and None not in sizes:
            short = [r for r in results if r.downloaded not in sizes]
            if short:
                raise TransferError(
                    f"{len(short)} GETs returned a wrong size, e.g. {short[0]}"
                )
    return seconds, results
