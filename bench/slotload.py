"""One XMPP client process of the benchmark: slixmpp, logged in, asking for slots.

The driver starts one or more of these per service (the same number for every
service), each with one c2s connection through ``tests/integration/client.py``, and
talks to it in JSON lines: a command on stdin, one answer on stdout.

- ``{"op": "load", "n": N, "concurrency": K}``: send N slot requests (XEP-0363,
  ``urn:xmpp:http:upload:0``, through slixmpp's ``xep_0363.request_slot``) keeping K
  in flight; answer ``{"start", "end", "latencies", "errors"}`` (monotonic seconds,
  which on Linux are comparable between processes).
- ``{"op": "slots", "files": [[name, size], ...], "concurrency": K}``: get those
  slots; answer ``{"slots": [{"put", "get", "headers"}, ...]}``.
- ``{"op": "login", "jid": JID, "password": P}``: log out, log in as that user;
  answer ``{"ready": true}``.

It prints ``{"ready": true}`` once logged in, and exits at the end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import slixmpp
from client import XmppClient

CONTENT_TYPE = "application/octet-stream"
_names = itertools.count()


async def _load(
    client: XmppClient, service: str, n: int, concurrency: int, tag: str
) -> dict[str, Any]:
    plugin = client.xmpp.plugin["xep_0363"]
    jid = slixmpp.JID(service)
    latencies: list[float] = []
    errors: list[str] = []
    todo = iter(range(n))

    async def lane() -> None:
        for _ in todo:
            name = f"{tag}-{next(_names)}.bin"
            began = time.monotonic()
            try:
                await plugin.request_slot(
                    jid, name, 1000, CONTENT_TYPE, timeout=client.timeout
                )
            except Exception as exc:  # an error stanza or a timeout: count it
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append(time.monotonic() - began)

    start = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    end = time.monotonic()
    return {"start": start, "end": end, "latencies": latencies, "errors": errors}


async def _slots(
    client: XmppClient, service: str, files: list[list[Any]], concurrency: int
) -> dict[str, Any]:
    plugin = client.xmpp.plugin["xep_0363"]
    jid = slixmpp.JID(service)
    out: list[dict[str, Any] | None] = [None] * len(files)
    todo = iter(enumerate(files))

    async def lane() -> None:
        for index, (name, size) in todo:
            iq = await plugin.request_slot(
                jid, name, int(size), CONTENT_TYPE, timeout=client.timeout
            )
            slot = iq["http_upload_slot"]
            out[index] = {
                "put": slot["put"]["url"],
                "get": slot["get"]["url"],
                "headers": {h["name"]: h["value"] for h in slot["put"]["headers"]},
            }

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return {"slots": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--tag", default="w0")
    args = parser.parse_args()

    client = XmppClient(args.jid, args.password, port=args.port, timeout=60)
    client.connect()
    try:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            if command["op"] == "login":
                client.close()
                client = XmppClient(
                    command["jid"], command["password"], port=args.port, timeout=60
                )
                client.connect()
                print(json.dumps({"ready": True}), flush=True)
                continue
            if command["op"] == "load":
                coro = _load(
                    client,
                    args.service,
                    int(command["n"]),
                    int(command["concurrency"]),
                    args.tag,
                )
            elif command["op"] == "slots":
                coro = _slots(
                    client,
                    args.service,
                    command["files"],
                    int(command.get("concurrency", 8)),
                )
            else:
                raise SystemExit(f"unknown op {command['op']!r}")
            result = client.run(coro, timeout=600)
            print(json.dumps(result), flush=True)
    finally:
        client.close()


if __name__ == "__main__":
    main()
