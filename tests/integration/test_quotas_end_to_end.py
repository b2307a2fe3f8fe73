"""Quotas and purposes end to end: slixmpp through Prosody to a real service."""

from __future__ import annotations

import calendar
import io
import re
import sqlite3
import time
from collections.abc import Callable

import pytest
import slixmpp
from client import SlotRefusedError, XmppClient, download
from twistd import ONLINE_PATTERN, HttpUpload

pytestmark = pytest.mark.integration

WINDOW = 86400
PURPOSE_NS = "urn:xmpp:http:upload:purpose:0"


def upload(
    client: XmppClient, service: str, name: str, data: bytes, purpose: str | None = None
) -> str:
    return client.run(
        client.xmpp.plugin["xep_0363"].upload_file(
            name,
            size=len(data),
            content_type="application/octet-stream",
            input_file=io.BytesIO(data),
            domain=slixmpp.JID(service),
            purpose=purpose,
            timeout=client.timeout,
        )
    )


def stamp_of(refusal: SlotRefusedError) -> float:
    match = re.search(r"stamp=['\"]([^'\"]+)['\"]", refusal.xml)
    assert match, refusal.xml
    return calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ"))


def record(service: HttpUpload, url: str) -> tuple[str, float | None]:
    file_id = url.split("/")[-2]
    db = sqlite3.connect(service.storage_path / "metadata.sqlite")
    try:
        return db.execute(
            "SELECT purpose, expires FROM files WHERE file_id = ?", (file_id,)
        ).fetchone()
    finally:
        db.close()


def test_quota_purpose_and_restart(
    make_spare_service: Callable[..., HttpUpload],
    connect: Callable[..., XmppClient],
) -> None:
    """profile kept; a full window refuses with its exact stamp, after a restart too."""
    service = make_spare_service()
    service.overrides = {
        "quotas": {"window": WINDOW, "files_per_window": 2},
        "purposes.permanent": {"enabled": False},
    }
    service.setup()
    service.start()
    client = connect()
    try:
        first = time.time()
        avatar = upload(
            client,
            service.component_jid,
            "me.png",
            b"\x89PNG avatar",
            purpose="profile",
        )
        assert download(avatar)[::2] == (200, b"\x89PNG avatar")
        assert record(service, avatar) == ("profile", None)  # kept: no expiry
        chat = upload(client, service.component_jid, "chat.bin", b"chat media")
        purpose, expires = record(service, chat)
        assert purpose == "message" and expires is not None

        with pytest.raises(SlotRefusedError) as refused:
            client.request_slot(service.component_jid, "third.bin", 5)
        assert (refused.value.error_type, refused.value.condition) == (
            "wait",
            "resource-constraint",
        )
        assert "retry" in refused.value.upload_elements
        stamp = stamp_of(refused.value)
        assert first + WINDOW <= stamp <= time.time() + WINDOW + 1

        service.stop()
        offset = service.log_offset()
        service.start(wait_online=False)
        service.wait_for_log(ONLINE_PATTERN, timeout=30, since=offset)
        with pytest.raises(SlotRefusedError) as again:
            client.request_slot(service.component_jid, "third.bin", 5)
        assert stamp_of(again.value) == stamp  # counts kept across the restart
    finally:
        client.close()


def test_refused_purposes_by_hand(
    make_spare_service: Callable[..., HttpUpload],
    connect: Callable[..., XmppClient],
) -> None:
    """A disabled purpose and an ephemeral without a date, in hand-written IQs."""
    service = make_spare_service()
    service.overrides = {"purposes.permanent": {"enabled": False}}
    service.setup()
    service.start()
    client = connect()
    try:
        for child, condition in (
            (f"<permanent xmlns='{PURPOSE_NS}'/>", "feature-not-implemented"),
            (f"<ephemeral xmlns='{PURPOSE_NS}'/>", "bad-request"),
        ):
            reply = client.raw_iq(
                service.component_jid,
                "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='3'>"
                f"{child}</request>",
            )
            assert reply.get("type") == "error"
            error = reply.find("{jabber:client}error")
            assert error is not None
            names = [c.tag.split("}")[1] for c in error]
            assert condition in names, names
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        reply = client.raw_iq(
            service.component_jid,
            "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='3'>"
            f"<ephemeral xmlns='{PURPOSE_NS}' expire-before='{future}'/></request>",
        )
        assert reply.get("type") == "result"
    finally:
        client.close()
