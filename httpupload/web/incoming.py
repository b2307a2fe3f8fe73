"""The body of one accepted PUT: held until admitted, hashed and written as it arrives.

``UploadReceiver`` (``httpupload.web.uploads``) makes one per accepted PUT
and decides its admission; the PUT's owner (``httpupload.web.put``) feeds
it the body and asks it to commit.  Its outcome (stored or not, the partial
file gone) is what a newer PUT of the same slot waits for.

About 450 lines: one body's admission, hashing, commit, keep and outcome
are one state machine; its parts read each other's flags.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from httpupload.errors import (
    AlreadyStored,
    DuplicateFile,
    HttpUploadError,
    IncompleteBody,
    StorageError,
    TooLarge,
    UploadRefused,
)
from httpupload.slots import Slot
from httpupload.storage import FileInfo, KeptUpload, PendingUpload

# Body bytes held while a PUT waits to be admitted.  The connection stops
# being read at the first chunk, so this is one socket read in practice.
MAX_HELD = 1024 * 1024

log = Logger()


@dataclass(frozen=True)
class Admitted:
    """How an admitted upload goes on (what ``admit_when``'s Deferred gives).

    ``sha256``: the hash of the bytes already kept before ``offset`` (an
    append).  ``stored``: the slot's file is stored already; the body is
    compared with it (its bytes are the stored ones: success) and never
    written, or, with ``same``, already known to be the same (a matching
    ``Repr-Digest``).
    """

    sha256: hashlib._Hash | None = None
    stored: FileInfo | None = None
    same: bool = False


@dataclass(frozen=True)
class Kept:
    """The body ended (or broke off) before the upload did: this much is kept."""

    offset: int


class IncomingUpload:
    """The body of one accepted PUT, hashed and written as it arrives.

    Nothing goes to storage until the upload is *admitted* (``admit_when``):
    its record is not complete, and an older PUT of the same slot has been
    thrown away.  Until then the first chunks are held here and ``write``
    asks the connection to stop reading; a refusal then (409, 403, 503) is
    the answer once the body is in, and no byte of it was stored.
    """

    def __init__(
        self,
        slot: Slot,
        content_type: str,
        begin_write: Callable[[], PendingUpload],
        clock: IReactorTime,
        on_done: Callable[[IncomingUpload], None],
        on_stored: Callable[[Slot, FileInfo], Deferred[None]] | None = None,
        adopt_stored: Callable[[Slot, FileInfo], Deferred[FileInfo | None]]
        | None = None,
        replaces: IncomingUpload | None = None,
        cancel: Callable[[], None] | None = None,
        *,
        offset: int = 0,
        complete: bool | None = True,
        on_kept: Callable[[Slot, int, hashlib._Hash | None], None] | None = None,
    ) -> None:
        self.slot = slot
        # Where this body starts in the upload (an append), and whether it
        # ends it: True (a plain PUT: the whole body, or an error), False
        # (the client says more follows) or None (it ends it if it reaches
        # the slot's size: tus).
        self.offset = offset
        self.complete = complete
        # With ``on_kept`` the storage keeps partial uploads: a body that
        # breaks off is kept (and told), not thrown away.
        self._on_kept = on_kept
        self._admitted_as = Admitted()
        self.content_type = content_type
        self._begin_write = begin_write
        self._pending: PendingUpload | None = None
        self._on_stored = on_stored
        self._adopt_stored = adopt_stored
        self._clock = clock
        self._on_done: Callable[[IncomingUpload], None] | None = on_done
        self._sha256 = hashlib.sha256()
        self.finished = False
        self.aborted = False
        # Counted here, not by storage: a write that failed (full disk) must
        # be reported as such on commit, not as a short body.
        self.bytes_received = 0
        # Given by whoever holds the connection: cuts it off (a drain ends,
        # or a newer PUT of the slot replaces this one).
        self.cancel: Callable[[], None] = cancel or (lambda: None)
        self._aborting: Deferred[None] | None = None
        # Admission: chunks held until then (None once decided), who waits.
        self._held: list[bytes] | None = []
        self._held_bytes = 0
        self._admission: Deferred[Admitted | None] | None = None
        self._decided = False
        self._waiting: list[Deferred[None]] = []
        self._refusal: HttpUploadError | None = None
        self._keeping: Deferred[int] | None = None
        # More came than the slot holds: never stored as if whole.
        self.overflowed = False
        # The outcome: stored or not, once this upload is over.
        self._replaces = replaces
        self._over: Deferred[bool] = Deferred()
        self._settling = False

    # -- admission -----------------------------------------------------------

    def admit_when(self, decided: Deferred[Admitted | None]) -> None:
        """Send the body to storage once ``decided`` fires; if it fails (with
        an ``UploadRefused``), refuse the upload with that error.  An abort
        before then cancels ``decided`` (nobody needs its answer)."""
        self._admission = decided
        decided.addCallbacks(self._admit, self._refuse).addErrback(
            lambda f: log.failure("Admitting an upload failed", f)
        )

    def _admit(self, admitted: Admitted | None) -> None:
        held, self._held = self._held or [], None
        if self.aborted:
            self._wake(None)
            return
        if admitted is not None:
            self._admitted_as = admitted
            if admitted.sha256 is not None:
                self._sha256 = admitted.sha256
        for chunk in held:
            self._sha256.update(chunk)
        if self._admitted_as.stored is not None:
            self._wake(None)  # compared, never written
            return
        try:
            self._pending = self._begin_write()
        except (UploadRefused, StorageError, ValueError) as e:
            self._refusal = (
                e
                if isinstance(e, HttpUploadError)
                else UploadRefused("The upload cannot resume there")
            )
            self._wake(None)
            return
        behind = None
        for chunk in held:
            behind = self._pending.write(chunk) or behind
        self._wake(behind)

    def _refuse(self, failure: Failure) -> None:
        self._held = None
        if isinstance(failure.value, (UploadRefused, StorageError)):
            self._refusal = failure.value
        elif failure.check(CancelledError):
            self._refusal = UploadRefused("The upload was cut off")
        else:
            log.failure("Admitting an upload failed", failure)
            self._refusal = UploadRefused("Internal error")
        self._wake(None)

    def _wake(self, behind: Deferred[None] | None) -> None:
        self._decided = True
        waiting, self._waiting = self._waiting, []

        def wake(result: object = None) -> object:
            for waiter in waiting:
                waiter.callback(None)
            return result

        if behind is None:
            wake()
        else:
            behind.addBoth(wake)

    def _admitted(self) -> Deferred[None]:
        """Fires once admission is decided (and the held chunks written)."""
        if self._decided and not self._waiting:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    # -- the body --------------------------------------------------------------

    @property
    def reached(self) -> int:
        """Where the upload stands: the offset plus this body's bytes so far."""
        return self.offset + self.bytes_received

    def write(self, data: bytes) -> Deferred[None] | None:
        """Take a chunk; a Deferred asks the caller to hold the rest back."""
        room = self.slot.size - self.reached
        if len(data) > room:
            # Never past the slot's size: what fits is kept, the rest cut off.
            log.info("An upload went past its slot's size; cut off")
            data = data[: max(room, 0)]
            self.overflowed = True
            self.cancel()
        self.bytes_received += len(data)
        if self._held is not None:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > MAX_HELD:
                # The caller did not stop reading: cut it off, hold no more.
                log.warn("An upload sent too much before it was admitted; cut off")
                self.abort()
                self.cancel()
                return None
            return self._admitted()
        if self.aborted or self._refusal is not None:
            return None  # refused, or thrown away: the body is dropped
        self._sha256.update(data)
        if self._pending is None:
            return None  # compared with the stored file, not written
        return self._pending.write(data)

    def release(self) -> None:
        """No longer in flight: its answer is out (or its client gone).

        A partial file still being thrown away is waited for first.
        """
        if self._aborting is not None and not self._aborting.called:
            self._aborting.addBoth(lambda _: self.release())
            return
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)

    def finish(self) -> Deferred[FileInfo | Kept]:
        """The body is in: commit if it ends the upload, else keep what came.

        Fails if the upload cannot be stored (or, a plain PUT, is short).
        """
        self.finished = True
        d = self._admitted().addCallback(lambda _: self._commit())

        def over(result: FileInfo | Kept | Failure) -> FileInfo | Kept | Failure:
            self._settle(isinstance(result, FileInfo))
            return result

        return d.addBoth(over)

    def _ends_upload(self) -> bool:
        if self.complete is False:
            return False
        return self.complete is True or self.reached == self.slot.size

    def _commit(self) -> Deferred[FileInfo | Kept]:
        if self._refusal is not None:
            return fail(self._refusal)
        stored = self._admitted_as.stored
        if stored is not None:
            return self._compare(stored)
        pending = self._pending
        if pending is None:
            return fail(UploadRefused("The upload was cut off"))
        if self.overflowed:

            def too_large(_: object) -> FileInfo:
                raise TooLarge(f"The slot is for {self.slot.size} bytes")

            return self._keep().addCallback(too_large)
        if not self._ends_upload():
            return self._keep()
        if self.reached != self.slot.size:
            received = self.reached
            if self._on_kept is not None:
                # The bytes are good, the claim to end the upload was not.
                def short(_: object) -> FileInfo:
                    raise IncompleteBody(
                        f"The upload has {received} bytes, the slot is for "
                        f"{self.slot.size}"
                    )

                return self._keep().addCallback(short)

            def incomplete(_: object) -> FileInfo:
                raise IncompleteBody(
                    f"Body has {received} bytes, the slot is for {self.slot.size}"
                )

            return pending.abort().addCallback(incomplete)
        info = FileInfo(
            file_id=self.slot.file_id,
            filename=self.slot.filename,
            size=self.slot.size,
            content_type=self.content_type,
            sha256=self._sha256.hexdigest(),
            created=self._clock.seconds(),
        )
        committed = pending.commit(info)
        if self._on_stored is not None:
            on_stored = self._on_stored
            committed.addCallback(lambda _: on_stored(self.slot, info))
        d: Deferred[FileInfo | Kept] = committed.addCallback(lambda _: info)
        if self._adopt_stored is not None:
            d.addErrback(self._maybe_adopt, self._adopt_stored, info)
        return d

    def _compare(self, stored: FileInfo) -> Deferred[FileInfo | Kept]:
        """A stored slot PUT again: success if these are its bytes, else 409."""
        same = self._admitted_as.same or (
            self.reached == stored.size and self._sha256.hexdigest() == stored.sha256
        )
        if same:
            log.info("A PUT of stored bytes again; answered as stored")
            return succeed(stored)
        return fail(AlreadyStored("This slot has already been used"))

    def _keep(self) -> Deferred[FileInfo | Kept]:
        return self.keep().addCallback(Kept)

    def keep(self) -> Deferred[int]:
        """Keep what was written for a later append; fires with the offset kept.

        Without a storage that keeps partials, the partial file is thrown
        away (and 0 kept).
        """
        if self._keeping is not None:
            return self._chain(self._keeping)
        pending = self._pending
        if self._on_kept is None or not isinstance(pending, KeptUpload) or self.aborted:
            return self.abort().addCallback(lambda _: 0)
        self.finished = True
        hashed = self.reached
        sha256 = self._sha256.copy()
        keeping = pending.keep()
        self._keeping = keeping
        on_kept = self._on_kept

        def kept(offset: int) -> int:
            on_kept(self.slot, offset, sha256 if offset == hashed else None)
            self._settle(False)
            return offset

        keeping.addCallback(kept)
        return self._chain(keeping)

    @staticmethod
    def _chain(d: Deferred[int]) -> Deferred[int]:
        told: Deferred[int] = Deferred()

        def tell(result: int | Failure) -> int | Failure:
            if isinstance(result, Failure):
                told.errback(result)
                return 0
            told.callback(result)
            return result

        d.addBoth(tell)
        return told

    def interrupted(self) -> Deferred[int]:
        """The body broke off: keep what came (if storage keeps partials)."""
        if self._keeping is None and (self._pending is None or self.aborted):
            return self.abort().addCallback(lambda _: 0)
        return self.keep()

    def _maybe_adopt(
        self,
        failure: Failure,
        adopt: Callable[[Slot, FileInfo], Deferred[FileInfo | None]],
        info: FileInfo,
    ) -> Deferred[FileInfo] | Failure:
        """The slot's file is there already: if these are its bytes, it is ours."""
        if not failure.check(AlreadyStored, DuplicateFile):
            return failure

        def adopted(stored: FileInfo | None) -> FileInfo | Failure:
            return failure if stored is None else stored

        return adopt(self.slot, info).addCallback(adopted)

    def abort(self) -> Deferred[None]:
        """Throw the partial file away (if any); safe to call more than once."""
        if self._aborting is not None:
            again: Deferred[None] = Deferred()

            def tell(result: None) -> None:
                again.callback(None)
                return result

            self._aborting.addCallback(tell)
            return again
        self.finished = self.aborted = True
        self._held = None
        if self._admission is not None and not self._decided:
            self._admission.cancel()
        aborting: Deferred[None] = Deferred()
        self._aborting = aborting
        pending = self._pending
        discarded = pending.abort() if pending is not None else succeed(None)

        def settled(result: object) -> object:
            aborting.callback(None)
            self._settle(False)
            return result

        return discarded.addBoth(settled)

    # -- the outcome -------------------------------------------------------------

    def _settle(self, stored: bool) -> None:
        if self._settling:
            return
        self._settling = True
        replaced, self._replaces = self._replaces, None
        if stored or replaced is None:
            self._over.callback(stored)
        else:
            replaced.outcome().addCallback(self._over.callback)

    def outcome(self) -> Deferred[bool]:
        """Fires once this upload is over, its partial file gone: True if the
        slot's file is stored, by this upload or one it replaced."""
        told: Deferred[bool] = Deferred()

        def tell(stored: bool) -> bool:
            told.callback(stored)
            return stored

        self._over.addCallback(tell)
        return told


__all__ = ["MAX_HELD", "Admitted", "IncomingUpload", "Kept"]
