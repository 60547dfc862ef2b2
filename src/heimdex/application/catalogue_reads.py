"""``UnitOfWorkReads``: the ``CatalogueReads`` port over any unit of work (SQLite, the fakes).

PostgreSQL has a faster adapter of its own (``heimdex.adapters.db.pg_reads``); this one is what
every other backend uses, and the reference the contract suite holds that adapter to.
"""

from __future__ import annotations

from uuid import UUID

from heimdex.domain.model import Asset, AssetFilter, AssetPage, Job, JobFilter, JobPage, PageCursor
from heimdex.domain.ports import UnitOfWorkFactory


class UnitOfWorkReads:
    """Each read is a unit of work of its own, left without a commit (rolled back)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def asset(self, org_id: str, asset_id: UUID) -> Asset | None:
        async with self._uow(org_id) as uow:
            return await uow.assets.get(asset_id)

    async def assets(
        self, org_id: str, filters: AssetFilter, *, limit: int, after: PageCursor | None
    ) -> AssetPage:
        async with self._uow(org_id) as uow:
            return await uow.assets.list(filters, limit=limit, after=after)

    async def job(self, org_id: str, job_id: UUID) -> Job | None:
        async with self._uow(org_id) as uow:
            return await uow.jobs.get(job_id)

    async def jobs(
        self, org_id: str, filters: JobFilter, *, limit: int, after: PageCursor | None
    ) -> JobPage:
        async with self._uow(org_id) as uow:
            return await uow.jobs.list(filters, limit=limit, after=after)

    async def aclose(self) -> None:
        """Nothing of its own to release: the unit of work's database is closed elsewhere."""
