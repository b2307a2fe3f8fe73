"""Signed S3 requests on the reactor: botocore signs, twisted.web sends.

botocore is used only for what it is good at and never for I/O on the
reactor thread: SigV4 signing (``S3SigV4Auth``, ``S3SigV4QueryAuth``) and
the usual AWS credential chain, resolved in a thread at start.  Requests go
out through a ``twisted.web.client.Agent`` with a persistent connection
pool.  Credentials are kept *frozen* and refreshed in a thread every minute,
so signing never stalls on an expiring role's refresh; a large body's
payload hash is computed in a thread too.  The one exception is start-up:
``start_blocking`` and ``call_blocking`` run before the reactor does (the
store's probe, ``s3probe``), so that a store that cannot work stops the
service before it listens.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import (
    Credentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)
from botocore.session import Session
from treq import content as read_body
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from httpupload.config_s3 import S3Settings
from httpupload.errors import ConfigError
from httpupload.storage.s3.wire import (
    BytesProducer,
    S3Error,
    endpoint_of,
    error_of,
    object_url,
    query_string,
    xml_children,
)

log = Logger()

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Bodies at least this large are hashed for the signature in a thread.
THREAD_SIGN_BYTES = 256 * 1024
# SigV4 presigned URLs live at most a week.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
CREDENTIALS_REFRESH_SECONDS = 60.0
# Each blocking request of the start-up probe gets this long.
BLOCKING_TIMEOUT = 30.0


def aws_chain() -> Credentials | None:
    """What botocore's usual chain finds (environment, shared files, roles)."""
    found: Credentials | None = Session().get_credentials()
    return found


def _resolve_credentials(
    settings: S3Settings, chain: Callable[[], Credentials | None] = aws_chain
) -> Credentials:
    """The settings' keys, else what ``chain`` finds (botocore's by default)."""
    if settings.access_key_id and settings.secret_access_key:
        return Credentials(settings.access_key_id, settings.secret_access_key)
    found = chain()
    if found is None:
        raise ConfigError(
            "storage credentials",
            "no S3 credentials in the config, the environment or ~/.aws",
        )
    return found


class S3Client:
    """Sends signed requests for one bucket; start() before use, close() after.

    ``reactor`` also provides ``IReactorThreads`` and ``IReactorTCP`` (every
    reactor does): requests go out through an ``Agent`` on it.  Credentials
    not in the settings come from ``credential_chain`` (botocore's usual
    chain; a test passes its own rather than emptying the environment).
    """

    def __init__(
        self,
        settings: S3Settings,
        reactor: IReactorTime,
        *,
        agent: IAgent | None = None,
        threadpool: ThreadPool | None = None,
        timeout: float = 120.0,
        credential_chain: Callable[[], Credentials | None] = aws_chain,
    ) -> None:
        self.settings = settings
        self._chain = credential_chain
        self._reactor = reactor
        self._threadpool = threadpool
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 16
            # Below the idle timeouts of S3 servers (AWS: about 20 s).
            self._pool.cachedConnectionTimeout = 10
            agent = Agent(reactor, pool=self._pool)
        self._agent = agent
        self.timeout = timeout
        self._credentials: Credentials | None = None
        self._frozen: ReadOnlyCredentials | None = None
        self._refresher: LoopingCall | None = None
        self._start_waiters: list[Deferred[None]] = []

    def _in_thread(
        self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> Deferred[_T]:
        threads = IReactorThreads(self._reactor)
        pool = self._threadpool or threads.getThreadPool()
        return deferToThreadPool(threads, pool, f, *args, **kwargs)

    def start(self) -> Deferred[None]:
        """Resolve the credentials (in a thread: the chain may read files).

        Call it at start-up, so that missing credentials show before anything
        listens; the first request starts the client otherwise.  Calls made
        meanwhile share one resolution; after a failure the next call tries
        again.
        """
        if self._frozen is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._start_waiters.append(waiter)
        if len(self._start_waiters) == 1:
            ensureDeferred(self._start()).addBoth(self._started)
        return waiter

    def _started(self, result: object) -> None:
        waiters, self._start_waiters = self._start_waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    async def _start(self) -> None:
        self._credentials = await self._in_thread(
            _resolve_credentials, self.settings, self._chain
        )
        await self._refresh()
        self._start_refresher()

    def start_blocking(self) -> None:
        """Resolve the credentials in this thread, blocking.

        For start-up, before the reactor runs (as the PostgreSQL store opens):
        missing credentials then stop the service before it listens, and
        start() has nothing left to do.
        """
        if self._frozen is not None:
            return
        self._credentials = _resolve_credentials(self.settings, self._chain)
        self._frozen = self._credentials.get_frozen_credentials()
        self._start_refresher()

    def _start_refresher(self) -> None:
        if isinstance(self._credentials, RefreshableCredentials) and (
            self._refresher is None or not self._refresher.running
        ):
            self._refresher = LoopingCall(self._refresh_quietly)
            self._refresher.clock = self._reactor
            self._refresher.start(CREDENTIALS_REFRESH_SECONDS, now=False)

    async def _refresh(self) -> None:
        assert self._credentials is not None
        self._frozen = await self._in_thread(self._credentials.get_frozen_credentials)

    def _refresh_quietly(self) -> Deferred[None]:
        def failed(failure: Failure) -> None:
            log.failure("Refreshing S3 credentials failed", failure)

        return ensureDeferred(self._refresh()).addErrback(failed)

    def close(self) -> Deferred[None]:
        """Stop refreshing and close pooled connections."""
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        if self._pool is not None:
            closed: Deferred[None] = self._pool.closeCachedConnections()
            return closed
        return succeed(None)

    def _credentials_now(self) -> Credentials:
        if self._frozen is None:
            raise RuntimeError("S3Client.start() was not called")
        return Credentials(*self._frozen)

    def _sign(self, request: AWSRequest) -> AWSRequest:
        auth = S3SigV4Auth(self._credentials_now(), "s3", self.settings.region)
        auth.add_auth(request)
        return request

    def presign(
        self, method: str, key: str, headers: Mapping[str, str], expires_in: int
    ) -> str:
        """A URL that lets its holder send this request, with these headers bound."""
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"a presigned URL lives 1 s to 7 days, not {expires_in}")
        request = AWSRequest(
            method=method, url=object_url(self.settings, key), headers=dict(headers)
        )
        auth = S3SigV4QueryAuth(
            self._credentials_now(), "s3", self.settings.region, expires=expires_in
        )
        auth.add_auth(request)
        url: str = request.url
        return url

    async def request(
        self,
        method: str,
        key: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> IResponse:
        """Send one signed request; the response as it arrives (body unread)."""
        if self._frozen is None:
            await self.start()
        url = object_url(self.settings, key, query)
        aws = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
        if len(body) >= THREAD_SIGN_BYTES:
            aws = await self._in_thread(self._sign, aws)
        else:
            self._sign(aws)
        raw = Headers()
        for name, value in aws.headers.items():
            raw.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        # A pooled connection the store closed while idle fails a request
        # before it gets an answer: send again once if that cannot do harm
        # (a conditional PUT that did succeed would come back 412).
        idempotent = method in ("GET", "HEAD", "DELETE") or "partNumber=" in query
        for attempt in (1, 2):
            with_body = body or method in ("PUT", "POST")
            producer = BytesProducer(body) if with_body else None
            d = self._agent.request(
                method.encode("ascii"), url.encode("ascii"), raw, producer
            )
            d.addTimeout(timeout or self.timeout, self._reactor)
            try:
                response: IResponse = await d
                return response
            except RequestTransmissionFailed:
                if attempt == 2:
                    raise
            except ResponseNeverReceived:
                if attempt == 2 or not idempotent:
                    raise
            log.debug("Sending {method} again on a new connection", method=method)
        raise AssertionError("unreachable")

    async def call(
        self,
        method: str,
        key: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        ok: tuple[int, ...] = (200, 204, 206),
    ) -> tuple[IResponse, bytes]:
        """A request with its body read whole; S3Error unless the status is ``ok``."""
        response = await self.request(
            method, key, query=query, headers=headers, body=body
        )
        data = await read_body(response)
        if response.code not in ok:
            raise error_of(response.code, data)
        return response, data

    async def multipart_uploads(
        self, prefix: str, page_size: int | None = None
    ) -> list[tuple[str, str, str]]:
        """(key, upload id, initiated) of each multipart upload under ``prefix``.

        Every page is read; a store that says "truncated" without moving its
        markers on ends the listing rather than looping.
        """
        found: list[tuple[str, str, str]] = []
        markers: dict[str, str | int | None] = {}
        while True:
            params: dict[str, str | int | None] = {"uploads": None, "prefix": prefix}
            if page_size is not None:
                params["max-uploads"] = page_size
            _, body = await self.call(
                "GET", "", query=query_string({**params, **markers})
            )
            root = xml_children(body)
            for upload in root.iter("Upload"):
                found.append(
                    (
                        upload.findtext("Key") or "",
                        upload.findtext("UploadId") or "",
                        upload.findtext("Initiated") or "",
                    )
                )
            following: dict[str, str | int | None] = {
                "key-marker": root.findtext("NextKeyMarker") or "",
                "upload-id-marker": root.findtext("NextUploadIdMarker") or "",
            }
            if root.findtext("IsTruncated") != "true" or following == markers:
                return found
            markers = following

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload (one already gone counts as aborted)."""
        await self.call(
            "DELETE",
            key,
            query=query_string({"uploadId": upload_id}),
            ok=(200, 204, 404),
        )

    def call_blocking(
        self,
        method: str,
        key: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = BLOCKING_TIMEOUT,
    ) -> tuple[int, Headers, bytes]:
        """One signed request, blocking: status, headers and body.

        Only for start-up, before the reactor runs (the store's probe): it
        goes out through ``http.client``, not the agent, and trusts the
        system's CAs as the default agent does.  ``OSError`` when the store
        cannot be reached.
        """
        self.start_blocking()
        url = object_url(self.settings, key, query)
        aws = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
        self._sign(aws)
        parts = urlsplit(url)
        host = parts.hostname or ""
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                host,
                parts.port,
                timeout=timeout,
                context=ssl.create_default_context(),
            )
        else:
            connection = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            sent = body if body or method in ("PUT", "POST") else None
            connection.request(method, target, body=sent, headers=dict(aws.headers))
            response = connection.getresponse()
            data = response.read()
        except http.client.HTTPException as e:
            raise OSError(f"{type(e).__name__}: {e}") from None
        finally:
            connection.close()
        raw = Headers()
        for name, value in response.getheaders():
            raw.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        return response.status, raw, data


# The wire helpers (``wire``) are named here too, where callers look for them.
__all__ = ["BytesProducer", "S3Error", "endpoint_of", "error_of", "object_url"]
__all__ += ["S3Client", "aws_chain", "query_string", "xml_children"]
__all__ += ["BLOCKING_TIMEOUT", "CREDENTIALS_REFRESH_SECONDS"]
__all__ += ["MAX_PRESIGN_SECONDS", "THREAD_SIGN_BYTES"]
