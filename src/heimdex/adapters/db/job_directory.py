"""``SqlJobDirectory``: the cross-organisation questions about jobs (which org owns a job id,
which jobs are due, which one runs next, how many are queued). On PostgreSQL they go through
SECURITY DEFINER functions that answer ids, hand-over times or counts only (migrations 0002, 0003,
0005), so the runtime role still reads only its own organisation's rows."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Select, and_, case, func, or_, select, text, update

from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.tables import metadata
from heimdex.adapters.db.unit_of_work import SqlUnitOfWorkFactory
from heimdex.domain.model import JobStatus
from heimdex.domain.ports import JobInTurn

JOBS = metadata.tables["jobs"]
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class SqlJobDirectory:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._uow = SqlUnitOfWorkFactory(database)

    async def org_of(self, job_id: UUID) -> str | None:
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text("SELECT heimdex_job_org(:job)"), {"job": job_id}
                    )
                else:
                    result = await connection.execute(
                        select(JOBS.c.org_id).where(JOBS.c.id == job_id)
                    )
                org: str | None = result.scalar_one_or_none()
                return org

    async def due(
        self, now: datetime, enqueued_before: datetime, limit: int
    ) -> list[tuple[UUID, str]]:
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text("SELECT id, org_id FROM heimdex_due_jobs(:now, :before, :lim)"),
                        {"now": now, "before": enqueued_before, "lim": limit},
                    )
                else:
                    queued = and_(
                        JOBS.c.status == JobStatus.QUEUED.value,
                        or_(JOBS.c.next_attempt_at.is_(None), JOBS.c.next_attempt_at <= now),
                        or_(JOBS.c.enqueued_at.is_(None), JOBS.c.enqueued_at < enqueued_before),
                    )
                    expired = and_(
                        JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.lease_expires_at < now
                    )
                    result = await connection.execute(
                        select(JOBS.c.id, JOBS.c.org_id)
                        .where(or_(queued, expired))
                        .order_by(JOBS.c.created_at)
                        .limit(limit)
                    )
                return [(UUID(str(row[0])), str(row[1])) for row in result.all()]

    async def next_in_turn(self, now: datetime, prefer_org: str) -> JobInTurn | None:
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text(
                            "SELECT id, org_id, enqueued_at "
                            "FROM heimdex_next_job_in_turn(:now, :prefer)"
                        ),
                        {"now": now, "prefer": prefer_org},
                    )
                    row = result.first()
                else:
                    row = (await connection.execute(_next_in_turn(now, prefer_org))).first()
        if row is None:
            return None
        enqueued_at = row[2]
        if enqueued_at is not None and enqueued_at.tzinfo is None:  # SQLite via text() only
            enqueued_at = enqueued_at.replace(tzinfo=UTC)
        return JobInTurn(job_id=UUID(str(row[0])), org_id=str(row[1]), enqueued_at=enqueued_at)

    async def mark_enqueued(self, job_id: UUID, org_id: str, now: datetime | None) -> None:
        async with self._uow(org_id) as uow:
            await uow.session.execute(
                update(JOBS)
                .where(JOBS.c.org_id == org_id, JOBS.c.id == job_id)
                .values(enqueued_at=now)
            )
            await uow.commit()

    async def active_counts(self) -> dict[JobStatus, int]:
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text("SELECT status, jobs FROM heimdex_active_job_counts()")
                    )
                else:
                    result = await connection.execute(
                        select(JOBS.c.status, func.count())
                        .where(JOBS.c.status.in_([status.value for status in ACTIVE]))
                        .group_by(JOBS.c.status)
                    )
                counts = dict.fromkeys(ACTIVE, 0)
                for status, count in result.all():
                    counts[JobStatus(status)] = int(count)
                return counts


def _next_in_turn(now: datetime, prefer_org: str) -> Select[tuple[object, object, datetime | None]]:
    """The query of ``heimdex_next_job_in_turn`` (migration 0005), for SQLite."""
    running = (
        select(JOBS.c.org_id, func.count().label("jobs"))
        .where(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.lease_expires_at >= now)
        .group_by(JOBS.c.org_id)
        .subquery()
    )
    claimable = (
        select(JOBS.c.id, JOBS.c.org_id, JOBS.c.enqueued_at, JOBS.c.created_at)
        .where(
            or_(
                and_(
                    JOBS.c.status == JobStatus.QUEUED.value,
                    or_(JOBS.c.next_attempt_at.is_(None), JOBS.c.next_attempt_at <= now),
                ),
                and_(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.lease_expires_at < now),
            )
        )
        .subquery()
    )
    started = JOBS.alias("started")
    orgs = select(claimable.c.org_id).distinct().subquery()
    turns = select(
        orgs.c.org_id,
        select(func.max(started.c.started_at))
        .where(started.c.org_id == orgs.c.org_id)
        .scalar_subquery()
        .label("last_started"),
    ).subquery()
    return (
        select(claimable.c.id, claimable.c.org_id, claimable.c.enqueued_at)
        .join(turns, turns.c.org_id == claimable.c.org_id)
        .outerjoin(running, running.c.org_id == claimable.c.org_id)
        .order_by(
            func.coalesce(running.c.jobs, 0),
            turns.c.last_started.nulls_first(),
            case((claimable.c.org_id == prefer_org, 0), else_=1),
            claimable.c.created_at,
            claimable.c.id,
        )
        .limit(1)
    )
