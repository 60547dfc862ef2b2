"""``SqlIdempotencyStore``: ``Idempotency-Key`` claims and first answers in the database.

Each call is one short transaction of its own (scoped to the key's organisation for row-level
security on PostgreSQL), never part of the request's unit of work: a claim must be visible to a
concurrent duplicate at once, and must survive the request's rollback.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Result, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Executable

from heimdex.adapters.clock import SystemClock
from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.tables import metadata
from heimdex.adapters.db.unit_of_work import set_org
from heimdex.domain.idempotency import (
    ClaimOutcome,
    ClaimWindow,
    IdempotencyClaim,
    IdempotencyScope,
    StoredResponse,
)
from heimdex.domain.ports import Clock

RECORDS: Table = metadata.tables["idempotency_records"]
SCOPE_COLUMNS = ("org_id", "method", "route", "key")

# Rounds of insert-or-read before answering IN_FLIGHT: a record can change under us (released,
# expired, taken over by another claimer) between our statements; each round re-reads.
_CLAIM_ROUNDS = 3


def _matches(scope: IdempotencyScope) -> ColumnElement[bool]:
    return (
        (RECORDS.c.org_id == scope.org_id)
        & (RECORDS.c.method == scope.method)
        & (RECORDS.c.route == scope.route)
        & (RECORDS.c.key == scope.key)
    )


def _stored_response(row: RowMapping) -> StoredResponse:
    return StoredResponse(
        status=row["response_status"],
        headers=dict(row["response_headers"] or {}),
        body=bytes(row["response_body"] or b""),
    )


class SqlIdempotencyStore:
    """The ``IdempotencyStore`` port on SQLite or PostgreSQL.

    ``claim`` is one atomic ``INSERT … ON CONFLICT DO NOTHING`` (never select-then-insert); a
    claim whose lease ran out is taken over by a conditional UPDATE, and a record past its
    ``expires_at`` counts as absent. ``purge_expired`` is the housekeeping that deletes those.
    """

    def __init__(self, database: Database, clock: Clock | None = None) -> None:
        self._database = database
        # Only ``complete`` needs the time (completed_at); the port gives it none.
        self._clock: Clock = clock or SystemClock()

    async def claim(
        self, scope: IdempotencyScope, fingerprint: str, window: ClaimWindow
    ) -> IdempotencyClaim:
        now, lease_until = window.now, window.lease_until
        claim_it = self._insert().values(
            id=uuid.uuid4(),
            org_id=scope.org_id,
            method=scope.method,
            route=scope.route,
            key=scope.key,
            fingerprint=fingerprint,
            lease_until=lease_until,
            expires_at=window.expires_at,
            created_at=now,
        )
        async with self._transaction(scope.org_id) as connection:
            for _ in range(_CLAIM_ROUNDS):
                # An expired record is as good as absent: drop it so the insert can win. Both
                # statements are conditional, so concurrent claimers cannot both succeed.
                await connection.execute(
                    delete(RECORDS).where(_matches(scope), RECORDS.c.expires_at <= now)
                )
                if await _changed(connection, claim_it):
                    return IdempotencyClaim(outcome=ClaimOutcome.CLAIMED)
                result = await connection.execute(select(RECORDS).where(_matches(scope)))
                row = result.mappings().first()
                if row is None:  # released or purged since our insert: try again
                    continue
                if row["fingerprint"] != fingerprint:
                    return IdempotencyClaim(outcome=ClaimOutcome.MISMATCH)
                if row["completed_at"] is not None:
                    return IdempotencyClaim(
                        outcome=ClaimOutcome.REPLAY, response=_stored_response(row)
                    )
                if row["lease_until"] > now:
                    return IdempotencyClaim(outcome=ClaimOutcome.IN_FLIGHT)
                # The first request's lease ran out (it crashed): take it over, unless another
                # duplicate just did.
                take_over = (
                    update(RECORDS)
                    .where(
                        _matches(scope),
                        RECORDS.c.lease_until <= now,
                        RECORDS.c.completed_at.is_(None),
                    )
                    .values(lease_until=lease_until)
                )
                if await _changed(connection, take_over):
                    return IdempotencyClaim(outcome=ClaimOutcome.CLAIMED)
        return IdempotencyClaim(outcome=ClaimOutcome.IN_FLIGHT)

    async def complete(self, scope: IdempotencyScope, response: StoredResponse) -> None:
        # Only an open claim is completed: the first answer stays the one replayed.
        async with self._transaction(scope.org_id) as connection:
            await connection.execute(
                update(RECORDS)
                .where(_matches(scope), RECORDS.c.completed_at.is_(None))
                .values(
                    response_status=response.status,
                    response_headers=dict(response.headers),
                    response_body=response.body,
                    completed_at=self._clock.now(),
                )
            )

    async def release(self, scope: IdempotencyScope) -> None:
        async with self._transaction(scope.org_id) as connection:
            await connection.execute(
                delete(RECORDS).where(_matches(scope), RECORDS.c.completed_at.is_(None))
            )

    async def purge_expired(self, now: datetime) -> int:
        """Delete every organisation's records that expired by ``now``; answers how many.

        On PostgreSQL row-level security hides other organisations' rows from the runtime role,
        so this goes through the migration's SECURITY DEFINER function, which deletes expired
        records only.
        """
        with database_errors():
            async with self._database.engine.begin() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text("SELECT heimdex_purge_expired_idempotency(:cutoff)"),
                        {"cutoff": now},
                    )
                    return int(result.scalar_one())
                return await _changed(
                    connection, delete(RECORDS).where(RECORDS.c.expires_at <= now)
                )

    def _insert(self) -> Any:
        # The dialect's INSERT, for its ON CONFLICT clause (SQLite ≥ 3.24 and PostgreSQL).
        dialect = postgresql if self._database.is_postgres else sqlite
        return dialect.insert(RECORDS).on_conflict_do_nothing(index_elements=list(SCOPE_COLUMNS))

    @asynccontextmanager
    async def _transaction(self, org_id: str) -> AsyncIterator[AsyncConnection]:
        with database_errors():
            async with self._database.engine.begin() as connection:
                if self._database.is_postgres:
                    await set_org(connection, org_id)
                yield connection


async def _changed(connection: AsyncConnection, statement: Executable) -> int:
    result: Result[Any] = await connection.execute(statement)
    return cast("CursorResult[Any]", result).rowcount
