"""XEP-0050 ad-hoc commands end to end: slixmpp's xep_0050 through Prosody.

Uses the session's Prosody and httpupload (see conftest.py). Other tests upload
files as alice too, so these look only at the files they uploaded themselves.
"""

from __future__ import annotations

import os
import secrets

import pytest
from client import CommandRefusedError, XmppClient, download
from twistd import HttpUpload

pytestmark = pytest.mark.integration

NS_COMMANDS = "http://jabber.org/protocol/commands"


def file_id(get_url: str) -> str:
    return get_url.rsplit("/", 2)[-2]


def test_list_then_delete_one_of_two_uploads(
    client: XmppClient, httpupload: HttpUpload
) -> None:
    """Both uploads are listed; the deleted one answers 404 at once, the other 200."""
    service = httpupload.component_jid
    assert NS_COMMANDS in client.disco_info(service).features
    # slixmpp keeps disco items in a set: their order is lost.
    assert sorted(client.commands(service)) == [
        (service, "delete", "Delete one of my uploads"),
        (service, "list", "List my uploads"),
        (service, "usage", "Show my usage and quotas"),
    ]
    tag = secrets.token_hex(4)
    data = {f"adhoc-{tag}-{n}.txt": os.urandom(100 + n) for n in (1, 2)}
    urls = {
        name: client.upload(name, body, content_type="text/plain")
        for name, body in data.items()
    }
    gone, kept = urls.values()

    listed = client.command(service, "list")
    assert listed.status == "completed"
    assert [var for var, _ in listed.reported] == [
        "name",
        "size",
        "date",
        "expires",
        "url",
    ]
    rows = {row["url"]: row for row in listed.items}
    for name, url in urls.items():
        assert rows[url]["name"] == name
        assert rows[url]["size"] == str(len(data[name]))

    form = client.command(service, "delete")
    assert (form.status, form.actions, form.form_type) == (
        "executing",
        ["complete"],
        "form",
    )
    offered = dict(form.options["file"])
    assert offered[file_id(gone)].startswith(f"adhoc-{tag}-1.txt (101 bytes, ")
    done = client.command(
        service, "delete", sessionid=form.sessionid, values={"file": file_id(gone)}
    )
    assert done.status == "completed"
    assert done.notes == [("info", f"Deleted adhoc-{tag}-1.txt.")]

    assert download(gone)[0] == 404
    status, _, body = download(kept)
    assert (status, body) == (200, data[f"adhoc-{tag}-2.txt"])
    remaining = {row["url"] for row in client.command(service, "list").items}
    assert kept in remaining and gone not in remaining

    usage = client.command(service, "usage")
    assert usage.status == "completed"
    assert int(usage.values["stored-bytes"]) >= 102
    assert usage.notes[0][1].startswith("Stored: ")


def test_refusals(
    client: XmppClient, outsider: XmppClient, httpupload: HttpUpload
) -> None:
    """Outsiders are forbidden; a made-up session or file is a bad request."""
    service = httpupload.component_jid
    with pytest.raises(CommandRefusedError) as refused:
        outsider.command(service, "list")
    assert (refused.value.error_type, refused.value.condition) == (
        "cancel",
        "forbidden",
    )
    assert outsider.commands(service) == []

    with pytest.raises(CommandRefusedError) as refused:
        client.command(service, "delete", sessionid="made-up", values={"file": "x"})
    assert refused.value.condition == "bad-request"
    assert refused.value.command_conditions == ["bad-sessionid"]

    client.upload("adhoc-refusals.txt", b"x")
    form = client.command(service, "delete")
    with pytest.raises(CommandRefusedError) as refused:
        client.command(
            service, "delete", sessionid=form.sessionid, values={"file": "A" * 32}
        )
    assert refused.value.command_conditions == ["bad-payload"]
    canceled = client.command(
        service, "delete", action="cancel", sessionid=form.sessionid
    )
    assert canceled.status == "canceled"

    with pytest.raises(CommandRefusedError) as refused:
        client.command(service, "no-such-command")
    assert refused.value.condition == "item-not-found"
