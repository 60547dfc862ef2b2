"""``SqlWebhookDirectory`` and ``SqlReplayDirectory``: the cross-organisation questions about
deliveries (which are due, how many wait, which failed) and jobs (which ``heimdex replay`` may
requeue). On PostgreSQL they go through the SECURITY DEFINER functions of migration 0006, which
answer ids and counts only, so the runtime role still reads only its own organisation's rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, and_, func, or_, select, text
from sqlalchemy.sql import ColumnElement

from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.tables import metadata
from heimdex.domain.model import JobStatus
from heimdex.domain.replay import JobReplayFilter
from heimdex.domain.webhooks import DeliveryFilter, DeliveryStatus

DELIVERIES: Table = metadata.tables["webhook_deliveries"]
JOBS: Table = metadata.tables["jobs"]


class SqlWebhookDirectory:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def _rows(self, postgres: str, params: dict[str, Any], sqlite: Any) -> list[Any]:
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(text(postgres), params)
                else:
                    result = await connection.execute(sqlite)
                return list(result.all())

    async def due(
        self, now: datetime, per_endpoint: int, per_org: int, limit: int
    ) -> list[tuple[UUID, str, UUID]]:
        place = (
            func.row_number()
            .over(
                partition_by=DELIVERIES.c.endpoint_id,
                order_by=(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id),
            )
            .label("place")
        )
        by_endpoint = (
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.org_id,
                DELIVERIES.c.endpoint_id,
                DELIVERIES.c.next_attempt_at,
                place,
            )
            .where(
                DELIVERIES.c.status == DeliveryStatus.PENDING.value,
                DELIVERIES.c.next_attempt_at <= now,
                or_(DELIVERIES.c.lease_expires_at.is_(None), DELIVERIES.c.lease_expires_at < now),
            )
            .subquery()
        )
        turn = (
            func.row_number()
            .over(
                partition_by=by_endpoint.c.org_id,
                order_by=(by_endpoint.c.next_attempt_at, by_endpoint.c.id),
            )
            .label("turn")
        )
        by_org = (
            select(
                by_endpoint.c.id,
                by_endpoint.c.org_id,
                by_endpoint.c.endpoint_id,
                by_endpoint.c.next_attempt_at,
                turn,
            )
            .where(by_endpoint.c.place <= per_endpoint)
            .subquery()
        )
        sqlite = (
            select(by_org.c.id, by_org.c.org_id, by_org.c.endpoint_id)
            .where(by_org.c.turn <= per_org)
            .order_by(by_org.c.turn, by_org.c.next_attempt_at, by_org.c.id)
            .limit(limit)
        )
        rows = await self._rows(
            "SELECT id, org_id, endpoint_id "
            "FROM heimdex_due_webhook_deliveries(:now, :per, :per_org, :lim)",
            {"now": now, "per": per_endpoint, "per_org": per_org, "lim": limit},
            sqlite,
        )
        return [(UUID(str(row[0])), str(row[1]), UUID(str(row[2]))) for row in rows]

    async def pending(self) -> tuple[int, datetime | None]:
        sqlite = select(func.count(), func.min(DELIVERIES.c.created_at)).where(
            DELIVERIES.c.status == DeliveryStatus.PENDING.value
        )
        rows = await self._rows(
            "SELECT pending, oldest FROM heimdex_pending_webhook_deliveries()", {}, sqlite
        )
        count, oldest = rows[0]
        if isinstance(oldest, str):  # SQLite's min() bypasses the column type
            oldest = datetime.fromisoformat(oldest)
        return int(count), oldest

    async def failed(self, filters: DeliveryFilter, limit: int) -> list[tuple[UUID, str]]:
        conditions: list[ColumnElement[bool]] = [DELIVERIES.c.status == DeliveryStatus.FAILED.value]
        if filters.org_id is not None:
            conditions.append(DELIVERIES.c.org_id == filters.org_id)
        if filters.error_code is not None:
            conditions.append(DELIVERIES.c.last_error_code == filters.error_code)
        if filters.since is not None:
            conditions.append(DELIVERIES.c.updated_at >= filters.since)
        if filters.until is not None:
            conditions.append(DELIVERIES.c.updated_at < filters.until)
        sqlite = (
            select(DELIVERIES.c.id, DELIVERIES.c.org_id)
            .where(and_(*conditions))
            .order_by(DELIVERIES.c.updated_at)
            .limit(limit)
        )
        rows = await self._rows(
            "SELECT id, org_id FROM heimdex_failed_webhook_deliveries("
            ":org, :code, :since, :until, :lim)",
            {
                "org": filters.org_id,
                "code": filters.error_code,
                "since": filters.since,
                "until": filters.until,
                "lim": limit,
            },
            sqlite,
        )
        return [(UUID(str(row[0])), str(row[1])) for row in rows]

    async def replayable_jobs(self, filters: JobReplayFilter, limit: int) -> list[tuple[UUID, str]]:
        stuck = or_(
            JOBS.c.status == JobStatus.FAILED.value,
            and_(
                JOBS.c.status == JobStatus.RUNNING.value,
                JOBS.c.lease_expires_at < filters.stuck_before,
            ),
            and_(JOBS.c.status == JobStatus.QUEUED.value, JOBS.c.updated_at < filters.stuck_before),
        )
        conditions: list[ColumnElement[bool]] = [stuck]
        if filters.org_id is not None:
            conditions.append(JOBS.c.org_id == filters.org_id)
        if filters.kind is not None:
            conditions.append(JOBS.c.kind == filters.kind.value)
        if filters.error_code is not None:
            conditions.append(JOBS.c.error_code == filters.error_code)
        if filters.since is not None:
            conditions.append(JOBS.c.updated_at >= filters.since)
        if filters.until is not None:
            conditions.append(JOBS.c.updated_at < filters.until)
        sqlite = (
            select(JOBS.c.id, JOBS.c.org_id)
            .where(and_(*conditions))
            .order_by(JOBS.c.updated_at)
            .limit(limit)
        )
        rows = await self._rows(
            "SELECT id, org_id FROM heimdex_replayable_jobs("
            ":org, :kind, :code, :since, :until, :stuck, :lim)",
            {
                "org": filters.org_id,
                "kind": filters.kind.value if filters.kind else None,
                "code": filters.error_code,
                "since": filters.since,
                "until": filters.until,
                "stuck": filters.stuck_before,
                "lim": limit,
            },
            sqlite,
        )
        return [(UUID(str(row[0])), str(row[1])) for row in rows]
