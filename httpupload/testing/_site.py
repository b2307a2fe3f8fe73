"""Our UploadSite built as the service builds it, its stores, and its harness."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.testing import MemoryReactorClock

from httpupload.config import Config, parse_config
from httpupload.metadata import FileRecord, MetadataStore
from httpupload.metadata.cache import RecordCache
from httpupload.metrics import Metrics
from httpupload.policy import SlotPolicy
from httpupload.slots import Slot, SlotSigner, new_file_id, url_path
from httpupload.storage import FileInfo, Storage
from httpupload.storage.memory import MemoryStorage
from httpupload.testing._wire import Wire, result_of
from httpupload.web.settings import WebSettings
from httpupload.web.site import UploadSite
from httpupload.web.uploads import UploadReceiver

START = 1_700_000_000.0
OWNER = "romeo@montague.tld"
TEST_KEY = b"k" * 32

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "component": {"jid": "upload.example", "secret": "s3cret"},
    "http": {"public_url": "https://upload.example/", "signing_key": TEST_KEY.decode()},
    "storage": {"path": "/nonexistent/httpupload"},
    # Whose slots ``Harness.mint`` signs (OWNER) may upload.
    "access": {"domains": ["montague.tld"]},
}


@dataclass
class Minted:
    """A slot, its token, and what a client PUTs with."""

    slot: Slot
    token: str
    url: str

    @property
    def path(self) -> str:
        return "/" + self.slot.path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# -- building the site -----------------------------------------------------------


def make_config(**sections: Mapping[str, Any]) -> Config:
    """A checked ``Config``: a minimal valid file with ``sections`` merged in.

    ``make_config(http={"idle_timeout": 5}, limits={"max_file_size": 10})``.
    Parsed by ``httpupload.config`` itself, so every default is the real one.
    """
    data: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BASE_CONFIG.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, Path("/nonexistent"))


def make_receiver(
    config: Config,
    storage: Storage,
    clock: MemoryReactorClock,
    signer: SlotSigner,
    *,
    metadata: MetadataStore | None = None,
    records: RecordCache | None = None,
) -> UploadReceiver:
    """The ``UploadReceiver`` (where PUTs are judged) the service builds."""
    return UploadReceiver(
        signer,
        storage,
        clock,
        max_uploads_per_address=config.http.max_uploads_per_address,
        metadata=metadata,
        records=records,
        partial_lifetime=config.http.partial_lifetime,
        recheck=SlotPolicy.from_config(config).recheck,
    )


def make_site(
    config: Config,
    storage: Storage,
    clock: MemoryReactorClock,
    *,
    metadata: MetadataStore | None = None,
    metrics: Metrics | None = None,
    receiver: UploadReceiver | None = None,
    records: RecordCache | None = None,
) -> UploadSite:
    """The ``UploadSite`` the service builds from ``config``, on ``clock``.

    ``records``: the download's record cache, as the service has one.
    """
    h = config.http
    if receiver is None:
        assert h.signing_keys is not None, "make_config gives a signing key"
        signer = SlotSigner(h.signing_keys, clock)
        receiver = make_receiver(
            config, storage, clock, signer, metadata=metadata, records=records
        )
    return UploadSite(
        receiver,
        storage,
        clock,
        settings=WebSettings.from_config(h),
        metadata=metadata,
        metrics=metrics,
        records=records,
    )


async def _store(
    storage: Storage,
    metadata: MetadataStore | None,
    info: FileInfo,
    data: bytes,
    record: FileRecord,
) -> FileInfo:
    pending = storage.begin_write(info.file_id)
    written = pending.write(data)
    if written is not None:
        await written
    if metadata is not None:
        await metadata.reserve(record, 86400, lambda usage: None)
    await pending.commit(info)
    if metadata is not None:
        await metadata.complete(
            info.file_id, info.sha256, info.content_type, info.created
        )
    return info


def stored_file(
    storage: Storage,
    metadata: MetadataStore | None = None,
    data: bytes = b"hello",
    name: str = "file.bin",
    content_type: str = "application/octet-stream",
    *,
    created: float = START - 10,
    owner: str = OWNER,
    purpose: str = "message",
    expires: float | None = None,
    file_id: str | None = None,
    **info: Any,
) -> Deferred[FileInfo]:
    """Store ``data`` (and its complete record) as a finished upload would.

    ``info`` overrides fields of the stored ``FileInfo`` (a recorded size
    other than the bytes', say).  Fires at once on memory stores.
    """
    file_id = file_id or new_file_id()
    stored = FileInfo(
        **{
            "file_id": file_id,
            "filename": name,
            "size": len(data),
            "content_type": content_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": created,
            **info,
        }
    )
    record = FileRecord(
        file_id=file_id,
        owner=owner,
        filename=name,
        size=stored.size,
        content_type=content_type,
        purpose=purpose,
        created=created,
        slot_expires=created + 300,
        expires=expires,
    )
    return ensureDeferred(_store(storage, metadata, stored, data, record))


class Harness(Wire):
    """An ``UploadSite`` on a ``MemoryReactorClock``, its stores, and clients.

    Made by ``make_harness``; ``storage`` is a ``MemoryStorage`` unless
    another was given, ``clock`` the reactor of everything.
    """

    def __init__(
        self,
        config: Config,
        clock: MemoryReactorClock,
        storage: Any,
        metadata: MetadataStore | None,
        metrics: Metrics,
        signer: SlotSigner,
        receiver: UploadReceiver,
        site: UploadSite,
    ) -> None:
        super().__init__(site, clock, base=config.http.public_url)
        self.config = config
        self.storage = storage
        self.metadata = metadata
        self.metrics = metrics
        self.signer = signer
        self.receiver = receiver
        self.site = site

    def mint(
        self,
        name: str = "a.txt",
        size: int = 5,
        content_type: str | None = None,
        *,
        owner: str = OWNER,
        lifetime: int = 300,
    ) -> Minted:
        """A new slot for ``name`` of ``size`` bytes, signed as a grant signs it.

        Only the token: no record is made (see ``grant``).
        """
        slot, token = self.signer.mint(name, size, content_type, owner, lifetime)
        return Minted(slot, token, self.base + slot.path)

    def grant(
        self,
        name: str = "a.txt",
        size: int = 5,
        content_type: str | None = None,
        *,
        owner: str = OWNER,
        lifetime: int = 300,
        expires: float | None = None,
    ) -> Minted:
        """A slot as ``SlotGranter`` grants it: minted, and its record reserved.

        No quota is checked; ``expires`` is when the stored file stops being
        served (None: never).  Needs a metadata store.
        """
        assert self.metadata is not None, "grant() reserves a record: no store"
        minted = self.mint(name, size, content_type, owner=owner, lifetime=lifetime)
        record = FileRecord(
            file_id=minted.slot.file_id,
            owner=owner,
            filename=name,
            size=size,
            content_type=content_type,
            purpose="message",
            created=self.clock.seconds(),
            slot_expires=minted.slot.expires,
            expires=expires,
        )
        result_of(self.metadata.reserve(record, 86400, lambda usage: None))
        return minted

    def store(
        self, data: bytes = b"hello", name: str = "file.bin", **kw: Any
    ) -> tuple[FileInfo, str]:
        """``stored_file`` into this site's stores: its info and GET path."""
        info = result_of(stored_file(self.storage, self.metadata, data, name, **kw))
        return info, "/" + url_path(info.file_id, name)

    def upload(
        self, data: bytes, name: str = "a.bin", content_type: str | None = None
    ) -> str:
        """PUT ``data`` through a fresh slot (it must be stored); its URL."""
        slot = self.mint(name, len(data), content_type)
        answer = self.request("PUT", slot.url, data=data, headers=slot.headers)
        assert answer.code == 201, answer
        return slot.url


def make_harness(
    config: Config | None = None,
    *,
    storage: Storage | None = None,
    metadata: MetadataStore | None = None,
    metrics: Metrics | None = None,
    clock: MemoryReactorClock | None = None,
    records: RecordCache | None = None,
    **sections: Mapping[str, Any],
) -> Harness:
    """An ``UploadSite`` built as the service builds it, on memory stores.

    ``sections`` go to ``make_config`` when no ``config`` is given.  Without
    a ``metadata`` store the site serves what storage holds (an embedding).
    The clock starts at ``START``.
    """
    if clock is None:
        clock = MemoryReactorClock()
        clock.advance(START)
    config = config or make_config(**sections)
    storage = storage if storage is not None else MemoryStorage()
    metrics = metrics or Metrics()
    assert config.http.signing_keys is not None, "make_config gives a signing key"
    signer = SlotSigner(config.http.signing_keys, clock)
    receiver = make_receiver(
        config, storage, clock, signer, metadata=metadata, records=records
    )
    site = make_site(
        config,
        storage,
        clock,
        metadata=metadata,
        metrics=metrics,
        receiver=receiver,
        records=records,
    )
    return Harness(config, clock, storage, metadata, metrics, signer, receiver, site)
