"""Ingest: upload slots, receiving the bytes, committing them as assets."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterable
from datetime import datetime, timedelta
from uuid import UUID

import anyio
import msgspec

from heimdex.application.probe_gate import ProbeSlots, SingleFlight
from heimdex.application.webhook_events import asset_data, record_event
from heimdex.domain.declared import Declared
from heimdex.domain.errors import (
    ChecksumMismatch,
    Conflict,
    InvalidInput,
    MultipartUnsupported,
    NotFound,
    NotResumable,
    SourceNotFound,
    SourceUriForbidden,
    StorageQuotaExceeded,
    TooManyResumableUploads,
    UnsupportedMediaType,
    UploadAlreadyReceived,
    UploadExpired,
    UploadInProgress,
    UploadNotReceived,
    UploadTooLarge,
)
from heimdex.domain.model import Asset, AssetStatus, Principal, Upload, UploadStatus
from heimdex.domain.ports import (
    Clock,
    Metrics,
    MultipartUploads,
    PartETag,
    PartTarget,
    Prober,
    Storage,
    StoredObject,
    UnitOfWork,
    UnitOfWorkFactory,
    UploadTarget,
)
from heimdex.domain.resumable import TUS_VERSION
from heimdex.domain.storage_keys import safe_source_name, upload_key
from heimdex.domain.webhooks import WebhookEventType
from heimdex.logs import get_logger

log = get_logger(__name__)

# Used with ``fullmatch``: ``match`` with ``$`` also accepts a trailing newline.
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"(video|audio)/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class UploadRequest(msgspec.Struct, frozen=True, kw_only=True):
    source_name: str
    content_length: int
    content_type: str
    sha256: str | None = None
    #: filled by tus PATCHes (``ResumableUploads``) rather than one PUT
    resumable: bool = False
    #: filled by the client's PUTs of presigned S3 UploadPart URLs, completed by commit
    multipart: bool = False


class IssuedUpload(msgspec.Struct, frozen=True, kw_only=True):
    upload: Upload
    target: UploadTarget
    #: a multipart slot's parts, in order (``target`` is then the first one's PUT)
    parts: list[PartTarget] | None = None


class IngestLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_upload_size_bytes: int
    upload_url_ttl: timedelta
    upload_stall: timedelta
    #: bytes an organisation may hold: its assets plus the uploads it may still send; 0: no quota
    storage_quota_bytes: int = 0
    #: largest resumable upload; 0: ``max_upload_size_bytes``
    max_resumable_size_bytes: int = 0
    #: a resumable slot expires this long after it was made or last appended to
    resumable_ttl: timedelta = timedelta(days=1)
    #: unfinished resumable slots an organisation may hold at once; 0: no limit
    max_resumable_per_org: int = 0

    def max_size(self, resumable: bool) -> int:
        if resumable and self.max_resumable_size_bytes:
            return self.max_resumable_size_bytes
        return self.max_upload_size_bytes


class IngestService:
    """init → PUT → commit. Each step checks the slot's state in its own short transaction, so
    no transaction stays open while bytes stream or media is probed."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        storage: Storage,
        prober: Prober,
        clock: Clock,
        limits: IngestLimits,
        metrics: Metrics,
        slots: ProbeSlots | None = None,
        multipart: MultipartUploads | None = None,
    ) -> None:
        """``slots``: the organisations' probe slots, shared with ``ProbeService``;
        ``multipart``: the store's multipart uploads, when it has them (S3)."""
        self._multipart = multipart
        self._uow = uow
        self._storage = storage
        self._prober = prober
        self._clock = clock
        self._limits = limits
        self._metrics = metrics
        self._slots = slots if slots is not None else ProbeSlots(per_org=0, wait_seconds=0)
        self._commits: SingleFlight[tuple[Asset, bool]] = SingleFlight()

    async def init_upload(
        self, principal: Principal, request: UploadRequest, base_url: str
    ) -> IssuedUpload:
        """Validate the declared file and issue a slot with a presigned upload target."""
        if request.multipart and request.resumable:
            raise MultipartUnsupported("ask for either multipart or resumable, not both")
        if request.multipart and self._multipart is None:
            raise MultipartUnsupported(
                "this server's storage takes no multipart uploads; use resumable (tus) instead"
            )
        max_size = self._limits.max_size(request.resumable)
        if request.content_length > max_size:
            raise UploadTooLarge(
                f"content_length {request.content_length} is over the limit of {max_size} bytes"
            )
        content_type = request.content_type.strip().lower()
        if not _MEDIA_TYPE.fullmatch(content_type):
            raise UnsupportedMediaType(
                f"content_type {request.content_type!r} is not video/* or audio/*"
            )
        sha256 = request.sha256.lower() if request.sha256 else None
        if sha256 is not None and not _SHA256.fullmatch(sha256):
            raise InvalidInput("sha256 must be 64 hexadecimal characters")
        now = self._clock.now()
        upload_id = uuid.uuid4()
        name = safe_source_name(request.source_name)
        key = upload_key(principal.org_id, upload_id, name)
        upload = Upload(
            id=upload_id,
            org_id=principal.org_id,
            key=key,
            source_uri=self._storage.uri_for(key),
            source_name=name,
            content_length=request.content_length,
            content_type=content_type,
            declared_sha256=sha256,
            status=UploadStatus.PENDING,
            expires_at=now
            + (self._limits.resumable_ttl if request.resumable else self._limits.upload_url_ttl),
            created_at=now,
            updated_at=now,
            resumable=request.resumable,
        )
        async with self._uow(principal.org_id) as uow:
            await self._check_storage_quota(uow, request.content_length, now)
            if request.resumable:
                await self._check_resumable_cap(uow, now)
            await uow.uploads.add(upload)
            await uow.commit()
        if request.multipart:
            return await self._begin_multipart(upload)
        if request.resumable:
            target = tus_target(upload, base_url)
        else:
            target = await self._storage.upload_target(upload, base_url)
        return IssuedUpload(upload=upload, target=target)

    async def _begin_multipart(self, upload: Upload) -> IssuedUpload:
        """Start the store's multipart upload and record its session in the slot (so the
        sweep can abort it), then presign its parts."""
        assert self._multipart is not None
        session = await self._multipart.begin_multipart(upload)
        upload = msgspec.structs.replace(upload, resumable_session=session)
        try:
            async with self._uow(upload.org_id) as uow:
                await uow.uploads.save(upload)
                await uow.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):  # no row points at it: abort it now
                await self._storage.discard_resumable(upload.key, session)
            raise
        parts = await self._multipart.multipart_targets(upload, session)
        first = parts[0]
        target = UploadTarget(url=first.url, method="PUT", headers={})
        return IssuedUpload(upload=upload, target=target, parts=parts)

    async def _check_resumable_cap(self, uow: UnitOfWork, now: datetime) -> None:
        """An unfinished resumable slot holds storage (a partial file, a multipart upload) for
        a day: one organisation may hold only so many. Under the organisation's lock, like the
        quota, so racing creations are counted one after the other."""
        cap = self._limits.max_resumable_per_org
        if cap <= 0:
            return
        await uow.lock_org()
        if await uow.uploads.open_resumable(now) >= cap:
            raise TooManyResumableUploads(
                f"the organisation already has {cap} unfinished resumable uploads; finish or "
                "terminate (DELETE) one first, or wait until one expires"
            )

    async def _check_storage_quota(self, uow: UnitOfWork, declared: int, now: datetime) -> None:
        """The organisation's committed assets, the slots it may still fill and this one must fit
        the quota. Checked in the slot's own transaction, under the organisation's lock:
        two inits racing are counted one after the other, never both against the same room."""
        quota = self._limits.storage_quota_bytes
        if quota <= 0:
            return
        await uow.lock_org()
        used = await uow.assets.total_size() + await uow.uploads.reserved_bytes(now)
        if used + declared > quota:
            raise StorageQuotaExceeded(
                f"this upload ({declared} bytes) does not fit the storage quota: {used} of "
                f"{quota} bytes are used by assets and open uploads; delete assets to make room"
            )

    async def receive_upload(
        self, org_id: str, upload_id: UUID, chunks: AsyncIterable[bytes]
    ) -> Upload:
        """Stream the bytes into the slot's object. On any failure nothing is kept and the slot
        is open again."""
        now = self._clock.now()
        async with self._uow(org_id) as uow:
            upload = await uow.uploads.get(upload_id)
            if upload is None:
                raise NotFound("no such upload")
            if upload.status in (UploadStatus.RECEIVED, UploadStatus.COMMITTED):
                raise UploadAlreadyReceived("this upload slot already holds its file")
            if upload.is_expired(now):
                raise UploadExpired("the upload slot has expired; ask for a new one")
            if upload.resumable:
                raise NotResumable("this slot takes tus PATCH requests, not one PUT")
            if upload.multipart:
                raise NotResumable("this slot takes its parts' PUTs to their presigned URLs")
            if not await uow.uploads.claim_for_upload(
                upload_id, now, now - self._limits.upload_stall
            ):
                raise UploadInProgress("another upload into this slot is still running")
            await uow.commit()
        try:
            stored = await self._storage.write_stream(
                upload.key,
                chunks,
                declared=Declared(size=upload.content_length, sha256=upload.declared_sha256),
            )
        except BaseException:
            with anyio.CancelScope(shield=True):  # reopen the slot even if we were cancelled
                await self._set_status(upload, UploadStatus.PENDING)
            raise
        received = msgspec.structs.replace(
            upload,
            status=UploadStatus.RECEIVED,
            received_sha256=stored.sha256,
            received_at=self._clock.now(),
            updated_at=self._clock.now(),
        )
        async with self._uow(org_id) as uow:
            await uow.uploads.save(received)
            await uow.commit()
        self._metrics.upload_received(stored.size_bytes)
        log.info("upload_received", upload_id=str(upload_id), size_bytes=stored.size_bytes)
        return received

    async def _set_status(self, upload: Upload, status: UploadStatus) -> None:
        async with self._uow(upload.org_id) as uow:
            await uow.uploads.save(
                msgspec.structs.replace(upload, status=status, updated_at=self._clock.now())
            )
            await uow.commit()

    async def commit_upload(
        self,
        principal: Principal,
        upload_id: UUID,
        source_uri: str | None = None,
        parts: list[PartETag] | None = None,
    ) -> tuple[Asset, bool]:
        """Verify the stored object, probe it, and make it an asset. Answers the asset and
        whether it is new: committing the same upload again returns the same asset.

        A multipart slot's upload is completed first, of ``parts`` (each part's ETag as its PUT
        answered) or, when ``None``, of the parts the store lists.

        Commits of one upload arriving together verify and probe it once: the others wait for
        that commit and answer its asset (or its error) as a repeated commit would."""
        async with self._uow(principal.org_id) as uow:
            upload = await uow.uploads.get(upload_id)
            if upload is None:
                raise NotFound("no such upload")
            if source_uri is not None and source_uri != upload.source_uri:
                raise SourceUriForbidden("source_uri is not the one issued for this upload")
            if parts is not None and not upload.multipart:
                raise InvalidInput("parts are for multipart uploads only")
            existing = await uow.assets.get_by_upload(upload_id)
            if existing is not None:
                return existing, False
            if upload.status is UploadStatus.UPLOADING:
                # Its PUT is still running: committing now could verify the whole file and
                # then have that PUT's last write turn the committed slot back to received.
                raise UploadInProgress("the upload is still arriving; commit once its PUT answered")
        (asset, created), ran = await self._commits.run(
            (principal.org_id, upload_id),
            lambda: self._verify_and_add(principal, upload, parts),
        )
        return asset, created and ran

    async def _verify_and_add(
        self, principal: Principal, upload: Upload, parts: list[PartETag] | None = None
    ) -> tuple[Asset, bool]:
        """The commit itself: check and read the object, probe it, add the asset."""
        upload_id = upload.id
        if upload.multipart:
            await self._complete_multipart(upload, parts)
        await self._check_head(upload)
        try:
            # One read of the object: the copy that is hashed is the one probed.
            async with self._storage.local_copy(upload.key) as copy:
                sha256 = self._check_copy(upload, copy.stored)
                async with self._slots.hold(principal.org_id):
                    media = await self._prober.probe(copy.path)
        except SourceNotFound as exc:
            raise UploadNotReceived("the uploaded object is missing; upload it again") from exc
        now = self._clock.now()
        asset = Asset(
            id=uuid.uuid4(),
            org_id=principal.org_id,
            upload_id=upload.id,
            key=upload.key,
            source_uri=upload.source_uri,
            source_name=upload.source_name,
            size_bytes=upload.content_length,
            sha256=sha256,
            content_type=upload.content_type,
            status=AssetStatus.COMMITTED,
            media=media,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._uow(principal.org_id) as uow:
                if await uow.uploads.get(upload.id) is None:  # swept while it was verified
                    raise UploadExpired("the upload slot expired and was removed; upload again")
                await uow.assets.add(asset)
                await uow.uploads.save(
                    msgspec.structs.replace(
                        upload,
                        status=UploadStatus.COMMITTED,
                        # A direct upload to the store is first seen here.
                        received_sha256=upload.received_sha256 or sha256,
                        received_at=upload.received_at or now,
                        updated_at=now,
                    )
                )
                await record_event(uow, WebhookEventType.ASSET_CREATED, asset_data(asset), now)
                await uow.commit()
        except Conflict:  # a concurrent commit of the same upload won
            async with self._uow(principal.org_id) as uow:
                winner = await uow.assets.get_by_upload(upload_id)
            if winner is None:
                raise
            return winner, False
        self._metrics.upload_committed(asset.size_bytes)
        log.info(
            "asset_committed",
            asset_id=str(asset.id),
            upload_id=str(upload.id),
            size_bytes=asset.size_bytes,
        )
        return asset, True

    async def _complete_multipart(self, upload: Upload, parts: list[PartETag] | None) -> None:
        """Make the object of the client's parts, unless an earlier commit did. An object that
        fails the checks after is refused like any other, and goes with the slot's sweep."""
        assert upload.resumable_session is not None
        if self._multipart is None:  # the server's storage changed under the slot
            raise UploadNotReceived("this server takes no multipart uploads; upload again")
        # As a presigned PUT sent before expiry may be committed after, parts sent before it
        # may be completed after, until the sweep aborts the upload with the slot.
        if await self._storage.stat(upload.key) is not None:
            return
        await self._multipart.complete_multipart(
            upload.key, upload.resumable_session, upload.content_length, parts
        )

    async def _check_head(self, upload: Upload) -> None:
        """The cheap check before reading the object: it exists, and neither its size nor a
        checksum the store reports contradicts what was declared (or received), so a wrong
        object is refused before gigabytes are read.

        A slot still ``pending`` is fine when its object exists: with a store the client sends
        the bytes to directly (a presigned S3 PUT) the API never sees the upload, and what the
        store holds is the only evidence.
        """
        head = await self._storage.stat(upload.key)
        if head is None:
            if upload.status in (UploadStatus.RECEIVED, UploadStatus.COMMITTED):
                raise UploadNotReceived("the uploaded object is missing; upload it again")
            raise UploadNotReceived("upload the file to upload_url before committing")
        _expected(upload).check(head.size_bytes, head.sha256, subject=_STORED)

    def _check_copy(self, upload: Upload, stored: StoredObject) -> str:
        """Size and sha256 of the bytes read back must be what was declared (and received);
        answers the sha256. Whatever the store says it verified, the bytes are re-hashed here
        (some S3-compatible stores ignore a declared checksum)."""
        if stored.sha256 is None:
            raise ChecksumMismatch("the stored object's sha256 could not be computed")
        _expected(upload).check(stored.size_bytes, stored.sha256, subject=_STORED)
        return stored.sha256


_STORED = "the stored object"


def tus_target(upload: Upload, base_url: str) -> UploadTarget:
    """A resumable slot's tus upload URL: the API's own ``/v1/uploads/{id}``, with a bearer
    token of the slot's organisation."""
    return UploadTarget(
        url=f"{base_url.rstrip('/')}/v1/uploads/{upload.id}",
        method="PATCH",
        headers={"Tus-Resumable": TUS_VERSION, "Content-Type": "application/offset+octet-stream"},
    )


def _expected(upload: Upload) -> Declared:
    """What the stored bytes must be: the declared length, and the declared sha256, else the one
    the API received."""
    return Declared(
        size=upload.content_length, sha256=upload.declared_sha256 or upload.received_sha256
    )
