"""Sweeping derived files whose asset is gone: thumbnails and sidecars a job wrote for an asset
deleted while it ran, when the job could not remove them itself (its process was killed).

Derived files are only ever written for an asset that exists, so files of an asset id that is
not in the catalogue can never become an asset's again: they are removed at once, no grace.
Each organisation's ids are checked inside its own unit of work (row-level security applies):
the organisation is the key's first segment.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

from heimdex.domain.errors import StorageError
from heimdex.domain.ports import Storage, UnitOfWorkFactory
from heimdex.domain.storage_keys import (
    DERIVED_ROOT,
    asset_derived_prefix,
    asset_of_derived_name,
    asset_of_sidecar_name,
    derived_prefix,
    org_of_derived_name,
    sidecar_key,
    sidecars_prefix,
)
from heimdex.logs import get_logger

log = get_logger(__name__)

#: asset ids asked about in one query
_BATCH = 500


class DerivedFileSweeper:
    """Removes the derived files of assets that no longer exist, at most once per ``every``:
    a pass lists every organisation's derived files (one request per thousand on S3), and is
    only a backstop for the job's own clean-up."""

    def __init__(self, uow: UnitOfWorkFactory, storage: Storage, every: timedelta) -> None:
        self._uow = uow
        self._storage = storage
        self._every = every.total_seconds()
        self._last_pass: float | None = None

    async def sweep(self) -> int:
        """One pass when one is due; answers how many assets' files were removed."""
        now = time.monotonic()
        if self._last_pass is not None and now - self._last_pass < self._every:
            return 0
        removed = await self.sweep_now()
        self._last_pass = now
        return removed

    async def sweep_now(self) -> int:
        """A pass now, whenever the last one was."""
        removed = 0
        async for name in self._storage.list_names(DERIVED_ROOT):
            org_id = org_of_derived_name(name)
            if org_id is not None:
                removed += await self._sweep_org(org_id)
        if removed:
            log.info("derived_files_swept", assets=removed)
        return removed

    async def _sweep_org(self, org_id: str) -> int:
        found: set[UUID] = set()
        async for name in self._storage.list_names(derived_prefix(org_id)):
            if (asset_id := asset_of_derived_name(name)) is not None:
                found.add(asset_id)
        async for name in self._storage.list_names(sidecars_prefix(org_id)):
            if (asset_id := asset_of_sidecar_name(name)) is not None:
                found.add(asset_id)
        removed = 0
        for batch in _batches(sorted(found), _BATCH):
            async with self._uow(org_id) as uow:
                existing = await uow.assets.existing(batch)
            for asset_id in batch:
                if asset_id not in existing and await self._remove(org_id, asset_id):
                    removed += 1
        return removed

    async def _remove(self, org_id: str, asset_id: UUID) -> bool:
        try:
            files = await self._storage.delete_prefix(asset_derived_prefix(org_id, asset_id))
            await self._storage.delete(sidecar_key(org_id, asset_id))
        except StorageError as exc:  # one that fails must not keep the rest
            log.warning("derived_files_not_removed", asset_id=str(asset_id), error=str(exc))
            return False
        log.info("derived_files_removed", org_id=org_id, asset_id=str(asset_id), files=files)
        return True


def _batches(items: list[UUID], size: int) -> Iterable[list[UUID]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
