"""Sweeping abandoned uploads: slots whose upload URL expired long ago without a commit.

A client that asks for a slot and never commits leaves a row and, often, an object (a whole
file or a part of one). Both go once the slot has been expired for ``grace``: long enough that a
client who uploaded just before expiry can still commit. A committed upload is never touched —
the row is deleted first, by one conditional statement that a concurrent commit either beats
(nothing is deleted) or loses (the commit finds its slot gone), and only then the object.
"""

from __future__ import annotations

from datetime import timedelta

from heimdex.application.webhook_events import record_event, upload_data
from heimdex.domain.errors import StorageError
from heimdex.domain.ports import Clock, Storage, UnitOfWorkFactory, UploadDirectory
from heimdex.domain.webhooks import WebhookEventType
from heimdex.logs import get_logger

log = get_logger(__name__)


class AbandonedUploadSweeper:
    """Deletes the rows and objects of uploads abandoned for longer than ``grace``."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        directory: UploadDirectory,
        storage: Storage,
        clock: Clock,
        grace: timedelta,
    ) -> None:
        self._uow = uow
        self._directory = directory
        self._storage = storage
        self._clock = clock
        self._grace = grace

    async def sweep(self, limit: int = 500) -> int:
        """Remove up to ``limit`` abandoned uploads; answers how many were removed."""
        expired_before = self._clock.now() - self._grace
        removed = 0
        for upload_id, org_id in await self._directory.abandoned(expired_before, limit):
            async with self._uow(org_id) as uow:
                upload = await uow.uploads.delete_abandoned(upload_id, expired_before)
                if upload is not None:
                    await record_event(
                        uow, WebhookEventType.UPLOAD_EXPIRED, upload_data(upload), self._clock.now()
                    )
                await uow.commit()
            if upload is None:  # committed (or swept by another process) meanwhile
                continue
            # After the row: with no row left, nothing can commit this object any more. Should
            # this delete fail, the object is an orphan no row points at, never a lost asset.
            try:
                if upload.resumable_session is not None:  # a resumable write never finished
                    await self._storage.discard_resumable(upload.key, upload.resumable_session)
                await self._storage.delete(upload.key)
            except StorageError as exc:
                log.warning("upload_object_not_deleted", upload_id=str(upload.id), error=str(exc))
            removed += 1
            log.info(
                "upload_abandoned",
                upload_id=str(upload.id),
                org_id=org_id,
                status=upload.status.value,
                expired_at=upload.expires_at.isoformat(),
            )
        if removed:
            log.info("uploads_swept", count=removed)
        return removed
