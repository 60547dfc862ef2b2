"""Resumable uploads (tus 1.0): a slot filled by PATCHes at recorded offsets.

A slot is made like any other (``IngestService.init_upload`` with ``resumable``); this service
tells its offset, appends chunks and terminates it. The offset lives in the slot's row and moves
only once the store holds the bytes durably (``ResumableWrites.append_resumable``), so a PATCH
cut off or a process killed mid-chunk leaves the offset at the last whole append — or, for a
client that went away mid-body without a checksum, at what arrived whole. The append that
reaches the declared length makes the object whole and the slot ``received``; commit then
verifies its size and sha256 and probes it as for a PUT.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from uuid import UUID

import anyio
import msgspec

from heimdex.domain.errors import (
    LengthMismatch,
    NotFound,
    NotResumable,
    UploadAlreadyReceived,
    UploadExpired,
    UploadInProgress,
    UploadOffsetMismatch,
    UploadTooLarge,
)
from heimdex.domain.model import Upload, UploadStatus
from heimdex.domain.ports import Clock, Metrics, Storage, UnitOfWorkFactory
from heimdex.domain.resumable import ChunkChecksum
from heimdex.logs import get_logger

log = get_logger(__name__)

#: A client killed mid-PATCH resumes at once; the server may notice the cut-off a moment later.
#: A PATCH finding the slot busy waits this long for it before answering 409.
CLAIM_WAIT_SECONDS = 3.0
_CLAIM_POLL_SECONDS = 0.05
#: how often a running PATCH tells it is alive (far below any sensible stall time)
HEARTBEAT_SECONDS = 30.0


class ResumableUploads:
    """HEAD, PATCH and DELETE of a resumable slot."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        storage: Storage,
        clock: Clock,
        *,
        ttl: timedelta,
        stall: timedelta,
        metrics: Metrics,
        claim_wait_seconds: float = CLAIM_WAIT_SECONDS,
    ) -> None:
        """``ttl``: a slot expires this long after its last append; ``stall``: a PATCH whose
        process died stops holding its slot after this long."""
        self._uow = uow
        self._storage = storage
        self._clock = clock
        self._ttl = ttl
        self._stall = stall
        self._metrics = metrics
        self._claim_wait = claim_wait_seconds

    async def status(self, org_id: str, upload_id: UUID) -> Upload:
        """The slot, for its offset (``received_bytes``), length and expiry."""
        async with self._uow(org_id) as uow:
            upload = await uow.uploads.get(upload_id)
        return self._usable(upload, allow_received=True)

    def _usable(self, upload: Upload | None, *, allow_received: bool) -> Upload:
        if upload is None:
            raise NotFound("no such upload")
        if not upload.resumable:
            raise NotResumable("this slot takes one PUT, not tus requests")
        if upload.status in (UploadStatus.RECEIVED, UploadStatus.COMMITTED):
            if allow_received:
                return upload
            raise UploadAlreadyReceived("this upload slot already holds its whole file")
        if upload.is_expired(self._clock.now()):
            raise UploadExpired("the upload slot has expired; start a new upload")
        return upload

    async def append(
        self,
        org_id: str,
        upload_id: UUID,
        offset: int,
        chunks: AsyncIterable[bytes],
        checksum: ChunkChecksum | None = None,
    ) -> Upload:
        """Append a PATCH body at ``offset`` (which must be the slot's); answers the slot with
        its new offset. Nothing of a chunk whose checksum fails is kept."""
        upload = await self._claim(org_id, upload_id, offset)
        claimed = upload

        async def heartbeat() -> None:  # a long PATCH keeps its claim from going stale
            await self._save(claimed)

        guard = _Received(upload.content_length - offset, heartbeat)
        try:
            session = upload.resumable_session
            if session is None:
                session = await self._storage.begin_resumable(upload.key)
                upload = msgspec.structs.replace(upload, resumable_session=session)
                await self._save(upload)  # before any byte: a sweep can always discard it
            reached = await self._storage.append_resumable(
                upload.key,
                session,
                offset=offset,
                total=upload.content_length,
                chunks=guard.pass_on(chunks),
                checksum=checksum,
            )
        except BaseException:
            with anyio.CancelScope(shield=True):  # release the slot even if we were cancelled
                await self._save(msgspec.structs.replace(upload, status=UploadStatus.PENDING))
            raise
        now = self._clock.now()
        done = reached == upload.content_length
        appended = msgspec.structs.replace(
            upload,
            status=UploadStatus.RECEIVED if done else UploadStatus.PENDING,
            received_bytes=reached,
            expires_at=now + self._ttl,
            received_at=now if done else None,
        )
        await self._save(appended)
        if done:
            self._metrics.upload_received(upload.content_length)
            log.info("upload_received", upload_id=str(upload_id), size_bytes=reached)
        if guard.cut_off:
            log.info("upload_patch_cut_off", upload_id=str(upload_id), offset=reached)
        return appended

    async def _claim(self, org_id: str, upload_id: UUID, offset: int) -> Upload:
        """The slot, marked ``uploading`` for this PATCH; waits a little for one still
        finishing (its client may just have been killed)."""
        with anyio.move_on_after(self._claim_wait):
            while True:
                try:
                    return await self._try_claim(org_id, upload_id, offset)
                except UploadInProgress:
                    await anyio.sleep(_CLAIM_POLL_SECONDS)
        return await self._try_claim(org_id, upload_id, offset)

    async def _try_claim(self, org_id: str, upload_id: UUID, offset: int) -> Upload:
        now = self._clock.now()
        async with self._uow(org_id) as uow:
            upload = self._usable(await uow.uploads.get(upload_id), allow_received=False)
            if upload.status is UploadStatus.UPLOADING and upload.updated_at >= now - self._stall:
                raise UploadInProgress("another PATCH into this upload is still running")
            if offset != upload.received_bytes:
                raise UploadOffsetMismatch(
                    f"Upload-Offset is {offset}, the upload's offset is {upload.received_bytes}; "
                    "ask HEAD for it and resume from there"
                )
            if not await uow.uploads.claim_for_upload(upload_id, now, now - self._stall):
                raise UploadInProgress("another PATCH into this upload is still running")
            await uow.commit()
        return msgspec.structs.replace(upload, status=UploadStatus.UPLOADING, updated_at=now)

    async def _save(self, upload: Upload) -> None:
        async with self._uow(upload.org_id) as uow:
            await uow.uploads.save(msgspec.structs.replace(upload, updated_at=self._clock.now()))
            await uow.commit()

    async def terminate(self, org_id: str, upload_id: UUID) -> None:
        """tus termination: the slot and its bytes go. A committed slot stays (its asset holds
        the object); a PATCH still running makes it 409."""
        now = self._clock.now()
        async with self._uow(org_id) as uow:
            upload = await uow.uploads.get(upload_id)
            if upload is None:
                raise NotFound("no such upload")
            if not upload.resumable:
                raise NotResumable("this slot takes one PUT, not tus requests")
            if upload.status is UploadStatus.COMMITTED:
                raise UploadAlreadyReceived("this upload is committed; delete its asset instead")
            if upload.status is UploadStatus.UPLOADING and upload.updated_at >= now - self._stall:
                raise UploadInProgress("a PATCH into this upload is still running")
            if await uow.assets.get_by_upload(upload_id) is not None:
                raise UploadAlreadyReceived("this upload is committed; delete its asset instead")
            await uow.uploads.delete(upload_id)
            await uow.commit()
        # After the row: nothing can append to or commit these bytes any more.
        if upload.resumable_session is not None:
            await self._storage.discard_resumable(upload.key, upload.resumable_session)
        await self._storage.delete(upload.key)
        log.info("upload_terminated", upload_id=str(upload_id), offset=upload.received_bytes)


class _Received:
    """Counts a PATCH body on its way to the store: a byte past the declared length is refused
    at once, and a client going away mid-body ends the body there (what arrived is kept).
    Every HEARTBEAT_SECONDS it calls ``heartbeat``, so a PATCH that runs for hours still holds
    its slot while one whose process died lets go after the stall time."""

    def __init__(self, room: int, heartbeat: Callable[[], Awaitable[None]]) -> None:
        self._room = room
        self._heartbeat = heartbeat
        self.size = 0
        self.cut_off = False

    async def pass_on(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        beat = anyio.current_time() + HEARTBEAT_SECONDS
        try:
            async for chunk in chunks:
                self.size += len(chunk)
                if self.size > self._room:
                    raise UploadTooLarge(
                        f"the body goes past the upload's length ({self._room} bytes were left)"
                    )
                if anyio.current_time() >= beat:
                    await self._heartbeat()
                    beat = anyio.current_time() + HEARTBEAT_SECONDS
                yield chunk
        except LengthMismatch:  # the client went away: keep what arrived whole
            self.cut_off = True
