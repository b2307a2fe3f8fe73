"""S3 direct mode end to end: slixmpp PUTs straight to a real SeaweedFS.

The component node mints a presigned PUT (length and type bound) and a GET URL
under the bucket's public base; no byte passes through httpupload.
"""

from __future__ import annotations

import io
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import slixmpp
from client import XmppClient, download
from conftest import SPARE_COMPONENT_JID
from twistd import HttpUpload

pytestmark = pytest.mark.integration


def test_slixmpp_uploads_straight_to_the_bucket(
    make_spare_service: Callable[..., HttpUpload],
    connect: Callable[..., XmppClient],
    postgresql: Any,
    seaweedfs: Any,
) -> None:
    """slixmpp's upload in direct mode goes straight to the bucket (nothing through
    our HTTP side) and is served; the presigned URL binds the length."""
    bucket = seaweedfs.make_bucket()
    public = f"{seaweedfs.endpoint}/{bucket}/"
    service = make_spare_service()
    service.overrides = {
        "http": {"signing_key": secrets.token_hex(32)},
        "storage": {"backend": "s3", "path": None},
        "storage.s3": {
            "bucket": bucket,
            "endpoint": seaweedfs.endpoint,
            "access_key_id": seaweedfs.access_key,
            "secret_access_key": seaweedfs.secret_key,
            "mode": "direct",
            "public_base_url": public,
        },
        "metadata": {"backend": "postgresql", "dsn": postgresql.new_database()},
    }
    service.setup()
    service.start()
    client = connect()
    data = os.urandom(300_000)
    url = client.run(
        client.xmpp.plugin["xep_0363"].upload_file(
            "holiday photo.jpg",
            domain=slixmpp.JID(SPARE_COMPONENT_JID),
            size=len(data),
            content_type="image/jpeg",
            input_file=io.BytesIO(data),
            timeout=client.timeout,
        )
    )
    assert url.startswith(public)
    status, _headers, body = download(url)
    assert (status, body) == (200, data)
    # Nothing went through httpupload's HTTP side.
    assert "PUT /" not in service.log_text()

    # The presigned URL binds the length: another body is refused by the store.
    slot = client.request_slot(SPARE_COMPONENT_JID, "other.bin", 10, "text/plain")
    assert slot.headers == {}
    request = urllib.request.Request(  # noqa: S310
        slot.put_url,
        data=b"x" * 11,
        method="PUT",
        headers={"Content-Type": "text/plain"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    assert refused.value.code == 403
    refused.value.close()  # its open response would be a ResourceWarning later
