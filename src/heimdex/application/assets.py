"""The asset catalogue: read, list (filters, cursor pages), delete."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import msgspec

from heimdex.application.catalogue_reads import UnitOfWorkReads
from heimdex.application.webhook_events import deleted_asset_data, record_event
from heimdex.domain.errors import InvalidInput, NotFound
from heimdex.domain.model import Asset, AssetFilter, AssetPage, JobFilter, PageCursor, Principal
from heimdex.domain.ports import CatalogueReads, Storage, UnitOfWorkFactory
from heimdex.domain.storage_keys import asset_derived_prefix, sidecar_key
from heimdex.domain.timestamps import as_utc, optional_utc
from heimdex.domain.webhooks import WebhookEventType

MAX_PAGE_SIZE = 200
#: the largest ``min_height`` a filter takes: heights are stored as 32-bit integers, and a
#: larger number overflows the database's comparison (a 500) rather than matching nothing
MAX_HEIGHT = 2**31 - 1


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
    return msgspec.structs.replace(cursor, created_at=as_utc(cursor.created_at, "cursor"))


ListingFilter = TypeVar("ListingFilter", AssetFilter, JobFilter)


def listing_window(
    filters: ListingFilter, cursor: str | None
) -> tuple[ListingFilter, PageCursor | None]:
    """What the asset and job listings share: creation-time filters in UTC (one that overflows
    is ``TimestampOutOfRange``) and the opaque cursor decoded."""
    after = decode_cursor(cursor) if cursor else None
    window = msgspec.structs.replace(
        filters,
        created_after=optional_utc(filters.created_after, "created_after"),
        created_before=optional_utc(filters.created_before, "created_before"),
    )
    return window, after


class AssetService:
    """Every call is scoped to the caller's organisation: another's asset is simply not found."""

    def __init__(
        self, uow: UnitOfWorkFactory, storage: Storage, reads: CatalogueReads | None = None
    ) -> None:
        self._uow = uow
        self._storage = storage
        # The reads of one row or one page: their own read-only transaction (PostgreSQL's
        # asyncpg adapter in the service), or a unit of work of their own.
        self._reads: CatalogueReads = reads or UnitOfWorkReads(uow)

    async def get(self, principal: Principal, asset_id: UUID) -> Asset:
        asset = await self._reads.asset(principal.org_id, asset_id)
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
        if filters.min_height is not None and not 0 <= filters.min_height <= MAX_HEIGHT:
            raise InvalidInput(f"min_height must be between 0 and {MAX_HEIGHT}")
        filters, after = listing_window(filters, cursor)
        return await self._reads.assets(principal.org_id, filters, limit=limit, after=after)

    async def delete(self, principal: Principal, asset_id: UUID) -> None:
        """Remove the asset, its upload slot, its source object and everything derived from it.

        Rows go first: a crash in between leaves orphaned files (the derived-files sweep's),
        never rows pointing at nothing. Under the organisation's lock, like a job recording its
        outcome: a job that finishes after this commit finds the asset gone and removes what it
        wrote; one that finished before wrote nothing the removal below misses.
        """
        async with self._uow(principal.org_id) as uow:
            await uow.lock_org()
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
