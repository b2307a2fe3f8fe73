"""The upload site behind an ``ssl:`` endpoint: PUT and GET over HTTPS.

A self-signed certificate is made with ``cryptography`` for 127.0.0.1 and
localhost; the site listens on the same kind of endpoint string an operator
writes in ``[http] listen``, and treq talks to it through an agent that trusts
that certificate alone (hostname checked, as a browser would).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import digest_of, header
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.ssl import Certificate
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from httpupload._reactor import running_reactor
from httpupload.slots import SlotSigner
from httpupload.storage.filesystem import FilesystemStorage
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

OWNER = "romeo@montague.tld"

# Twisted 26.10's ssl: endpoint hands pyOpenSSL X509 and PKey objects, which
# pyOpenSSL 26 deprecates; outside -W error this is silent (see the report).
# The TLS socket is the point here: these tests listen on 127.0.0.1 port 0.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Passing pyOpenSSL .* objects is deprecated:DeprecationWarning"
    ),
    pytest.mark.enable_socket,
]


def make_self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """Write a self-signed certificate for 127.0.0.1/localhost; return paths, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert_pem)
    return key_path, cert_path, cert_pem


@dataclass
class TlsServer:
    base: str
    signer: SlotSigner
    http: HTTPClient

    def mint(self, name: str, size: int, content_type: str) -> tuple[str, str]:
        """A slot's URL and its Authorization header value."""
        slot, token = self.signer.mint(name, size, content_type, OWNER, lifetime=300)
        return self.base + slot.path, f"Bearer {token}"


@pytest_twisted.async_yield_fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[TlsServer]:
    """The site behind an ssl: endpoint on the real reactor, and a trusting client."""
    global_reactor = running_reactor()
    key_path, cert_path, cert_pem = make_self_signed(tmp_path)
    storage = FilesystemStorage(
        tmp_path / "store", global_reactor, global_reactor.getThreadPool()
    )
    storage.prepare()
    signer = SlotSigner(b"k" * 32, global_reactor)
    site = UploadSite(
        UploadReceiver(signer, storage, global_reactor), storage, global_reactor
    )
    # The same endpoint syntax an operator puts in [http] listen.
    endpoint = serverFromString(
        global_reactor,
        f"ssl:0:privateKey={key_path}:certKey={cert_path}:interface=127.0.0.1",
    )
    port = await endpoint.listen(site)
    pool = HTTPConnectionPool(global_reactor, persistent=False)
    trusted = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(cert_pem))
    agent = Agent(global_reactor, contextFactory=trusted, pool=pool)
    number = cast(IPv4Address, port.getHost()).port
    yield TlsServer(f"https://127.0.0.1:{number}/", signer, HTTPClient(agent))
    await pool.closeCachedConnections()
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_put_and_get_over_https(tls_server: TlsServer) -> None:
    """A PUT over TLS is stored (201 with its digest) and a GET over TLS serves it."""
    data = os.urandom(300_000)
    url, authorization = tls_server.mint("secret plans.bin", len(data), "image/png")
    response = await tls_server.http.put(
        url,
        data=data,
        headers=Headers(
            {"Authorization": [authorization], "Content-Type": ["image/png"]}
        ),
    )
    body = await treq.content(response)
    assert response.code == 201, body
    assert header(response, "Repr-Digest") == digest_of(data)

    response = await tls_server.http.get(url)
    body = await treq.content(response)
    assert response.code == 200
    assert body == data
    assert header(response, "Content-Type") == "image/png"
    assert header(response, "Repr-Digest") == digest_of(data)


@pytest_twisted.ensureDeferred
async def test_untrusted_client_refuses_the_certificate(tls_server: TlsServer) -> None:
    """A client that does not trust the self-signed certificate gets no answer."""
    reactor = running_reactor()
    pool = HTTPConnectionPool(reactor, persistent=False)
    stranger = HTTPClient(Agent(reactor, pool=pool))
    with pytest.raises(ResponseNeverReceived) as refused:
        await stranger.get(tls_server.base)
    assert "certificate verify failed" in repr(refused.value).lower()


@pytest_twisted.ensureDeferred
async def test_responses_over_tls_carry_hsts(tls_server: TlsServer) -> None:
    """Every response over TLS carries Strict-Transport-Security, errors too."""
    data = b"hsts"
    url, authorization = tls_server.mint("h.txt", len(data), "text/plain")
    response = await tls_server.http.put(
        url,
        data=data,
        headers=Headers(
            {"Authorization": [authorization], "Content-Type": ["text/plain"]}
        ),
    )
    await treq.content(response)
    assert response.code == 201
    hsts = header(response, "Strict-Transport-Security")
    assert hsts is not None and "max-age=" in hsts, hsts
    for method in ("GET", "HEAD", "OPTIONS"):
        response = await tls_server.http.request(method, url)
        await treq.content(response)
        assert header(response, "Strict-Transport-Security"), method
    response = await tls_server.http.get(tls_server.base + "no/such")
    await treq.content(response)
    assert response.code == 404
    assert header(response, "Strict-Transport-Security")
