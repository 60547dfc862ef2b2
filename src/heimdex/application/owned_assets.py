"""The one way a use case finds the caller's asset: another organisation's is ``NotFound``,
exactly like a missing one (row-level security already hides it; the answer must not differ)."""

from __future__ import annotations

from uuid import UUID

from heimdex.domain.errors import NotFound
from heimdex.domain.model import Asset, Principal
from heimdex.domain.ports import UnitOfWorkFactory


async def owned_asset(uow: UnitOfWorkFactory, principal: Principal, asset_id: UUID) -> Asset:
    """The asset ``asset_id`` of ``principal``'s organisation, or ``NotFound``."""
    async with uow(principal.org_id) as unit:
        asset = await unit.assets.get(asset_id)
    if asset is None:
        raise NotFound("no such asset")
    return asset
