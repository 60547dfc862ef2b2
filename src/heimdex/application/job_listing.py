"""``GET /v1/jobs``: an organisation's jobs, newest first, filtered, in cursor pages."""

from __future__ import annotations

import msgspec

from heimdex.application.assets import decode_cursor
from heimdex.domain.errors import InvalidInput
from heimdex.domain.model import JobFilter, JobPage, Principal
from heimdex.domain.ports import UnitOfWorkFactory
from heimdex.domain.timestamps import optional_utc

MAX_JOB_PAGE = 200


class JobListing:
    """The caller's jobs only; the cursor is the asset listing's (opaque, keyset)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def list(
        self, principal: Principal, filters: JobFilter, limit: int, cursor: str | None
    ) -> JobPage:
        if not 1 <= limit <= MAX_JOB_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_JOB_PAGE}")
        after = decode_cursor(cursor) if cursor else None
        filters = msgspec.structs.replace(
            filters,
            created_after=optional_utc(filters.created_after, "created_after"),
            created_before=optional_utc(filters.created_before, "created_before"),
        )
        async with self._uow(principal.org_id) as uow:
            return await uow.jobs.list(filters, limit=limit, after=after)
