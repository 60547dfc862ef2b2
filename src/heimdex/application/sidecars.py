"""Reading what the sidecar jobs produced: the document and signed thumbnail URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import msgspec

from heimdex.application.owned_assets import owned_asset
from heimdex.domain.errors import NotFound, SidecarNotReady, SourceNotFound
from heimdex.domain.model import Asset, Principal
from heimdex.domain.ports import Clock, Storage, StoredObject, UnitOfWorkFactory
from heimdex.domain.sidecar import SidecarDocument, ThumbnailSummary
from heimdex.domain.storage_keys import asset_of_derived_key, sidecar_key


class ThumbnailLink(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    time: float
    width: int
    height: int
    url: str


class ThumbnailListing(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ThumbnailLink]
    # How many were asked for and why fewer; null for a sidecar written before it was recorded.
    summary: ThumbnailSummary | None


class SidecarService:
    def __init__(
        self, uow: UnitOfWorkFactory, storage: Storage, clock: Clock, url_ttl_seconds: int
    ) -> None:
        self._uow = uow
        self._storage = storage
        self._clock = clock
        self._url_ttl = url_ttl_seconds

    async def _asset(self, principal: Principal, asset_id: UUID) -> Asset:
        return await owned_asset(self._uow, principal, asset_id)

    async def document(self, principal: Principal, asset_id: UUID) -> bytes:
        """The sidecar's bytes as written (``heimdex.sidecar/v1``)."""
        asset = await self._asset(principal, asset_id)
        try:
            chunks = [
                c async for c in self._storage.read_chunks(sidecar_key(asset.org_id, asset.id))
            ]
        except SourceNotFound as exc:
            raise SidecarNotReady(
                "the sidecar is not ready: POST /v1/assets/{asset_id}/sidecar and poll the job"
            ) from exc
        return b"".join(chunks)

    async def thumbnails(
        self, principal: Principal, asset_id: UUID, base_url: str
    ) -> ThumbnailListing:
        """The thumbnails the sidecar lists, each with a URL that works without a token until
        it expires — for an ``<img>`` tag or a CDN — and how many were asked for."""
        raw = await self.document(principal, asset_id)
        document = msgspec.json.decode(raw, type=SidecarDocument)
        expires = int(self._clock.now().timestamp()) + self._url_ttl
        items = [
            ThumbnailLink(
                index=item.index,
                time=item.time,
                width=item.width,
                height=item.height,
                url=await self._storage.download_url(item.key, base_url, expires),
            )
            for item in document.thumbnails
        ]
        return ThumbnailListing(items=items, summary=document.thumbnail_summary)

    async def signed_file(self, org_id: str, key: str) -> tuple[StoredObject, AsyncIterator[bytes]]:
        """A derived file (thumbnail, sidecar) of ``org_id`` that a signed URL names, and its
        bytes. Only while its asset exists: the URLs of a deleted asset answer ``NotFound``
        even for a file that outlived it (a job still writing, or killed before clean-up)."""
        asset_id = asset_of_derived_key(org_id, key)
        if asset_id is None:
            raise NotFound("no such file")
        async with self._uow(org_id) as uow:
            asset = await uow.assets.get(asset_id)
        stored = None if asset is None else await self._storage.stat(key)
        if stored is None:
            raise NotFound("no such file")
        return stored, self._storage.read_chunks(key)
