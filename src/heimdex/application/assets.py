"""The asset catalogue: read, list (filters, cursor pages), delete."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

import msgspec

from heimdex.application.webhook_events import deleted_asset_data, record_event
from heimdex.domain.errors import InvalidInput, NotFound
from heimdex.domain.model import Asset, AssetFilter, AssetPage, PageCursor, Principal
from heimdex.domain.ports import Storage, UnitOfWorkFactory
from heimdex.domain.storage_keys import asset_derived_prefix, sidecar_key
from heimdex.domain.webhooks import WebhookEventType

MAX_PAGE_SIZE = 200


def encode_cursor(cursor: PageCursor) -> str:
    """Opaque to clients: base64url of the last row's sort key."""
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(token: str) -> PageCursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = msgspec.json.decode(raw, type=PageCursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("cursor is not one this API issued") from exc
    if cursor.created_at.tzinfo is None:
        raise InvalidInput("cursor is not one this API issued")
    return cursor


def _as_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is read as UTC, the zone every timestamp here is in."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class AssetService:
    """Every call is scoped to the caller's organisation: another's asset is simply not found."""

    def __init__(self, uow: UnitOfWorkFactory, storage: Storage) -> None:
        self._uow = uow
        self._storage = storage

    async def get(self, principal: Principal, asset_id: UUID) -> Asset:
        async with self._uow(principal.org_id) as uow:
            asset = await uow.assets.get(asset_id)
        if asset is None:
            raise NotFound("no such asset")
        return asset

    async def list(
        self, principal: Principal, filters: AssetFilter, limit: int, cursor: str | None
    ) -> AssetPage:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        if (
            filters.min_duration is not None
            and filters.max_duration is not None
            and filters.min_duration > filters.max_duration
        ):
            raise InvalidInput("min_duration is greater than max_duration")
        after = decode_cursor(cursor) if cursor else None
        filters = msgspec.structs.replace(
            filters,
            created_after=_as_utc(filters.created_after),
            created_before=_as_utc(filters.created_before),
        )
        async with self._uow(principal.org_id) as uow:
            return await uow.assets.list(filters, limit=limit, after=after)

    async def delete(self, principal: Principal, asset_id: UUID) -> None:
        """Remove the asset, its upload slot, its source object and everything derived from it.

        Rows go first: a crash in between leaves orphaned files, never rows pointing at nothing.
        """
        async with self._uow(principal.org_id) as uow:
            asset = await uow.assets.get(asset_id)
            if asset is None:
                raise NotFound("no such asset")
            await uow.assets.delete(asset_id)
            await uow.uploads.delete(asset.upload_id)
            await record_event(
                uow, WebhookEventType.ASSET_DELETED, deleted_asset_data(asset), datetime.now(UTC)
            )
            await uow.commit()
        await self._storage.delete(asset.key)
        await self._storage.delete(sidecar_key(asset.org_id, asset.id))
        await self._storage.delete_prefix(asset_derived_prefix(asset.org_id, asset.id))
