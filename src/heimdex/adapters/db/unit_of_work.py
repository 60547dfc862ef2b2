"""``SqlUnitOfWork``: one transaction of one organisation, over SQLite or PostgreSQL.

On PostgreSQL every transaction the unit of work begins first runs
``SELECT set_config('heimdex.org_id', :org_id, true)``: transaction-local, so it ends with the
transaction and never reaches the next user of the pooled connection, and the row-level
security policies (``migrations/versions/0001_catalogue.py``) confine every statement to that
organisation even if a query forgot its own filter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.frame_repository import SqlFrameRepository
from heimdex.adapters.db.repositories import (
    SqlAssetRepository,
    SqlJobRepository,
    SqlUploadRepository,
)
from heimdex.adapters.db.webhook_repositories import (
    SqlWebhookDeliveryRepository,
    SqlWebhookEndpointRepository,
)
from heimdex.domain.ports import (
    AssetRepository,
    FrameRepository,
    JobRepository,
    UploadRepository,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
)

ORG_SETTING = "heimdex.org_id"

# The third argument, ``is_local=true``, is what ``SET LOCAL`` does: undone at COMMIT/ROLLBACK.
SET_ORG = text(f"SELECT set_config('{ORG_SETTING}', :org_id, true)")
# A transaction-level advisory lock, one per organisation: released at COMMIT/ROLLBACK, and
# open to any role (the runtime role included), with no table to lock.
LOCK_ORG = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def set_org(connection: AsyncConnection, org_id: str) -> None:
    """Scope the connection's current transaction to ``org_id`` for row-level security."""
    await connection.execute(SET_ORG, {"org_id": org_id})


def _require_org(org_id: str) -> str:
    # An empty org would "work" — and match nothing on PostgreSQL, everything org-less on
    # SQLite. Refuse it where the mistake is made.
    if not org_id:
        raise ValueError("a unit of work needs an organisation id")
    return org_id


class OrgScopedSession(Session):
    """A session whose every transaction is scoped to the organisation in its ``info``."""


@event.listens_for(OrgScopedSession, "after_begin")
def _scope_transaction(
    session: Session, _transaction: SessionTransaction, connection: Connection
) -> None:
    # Runs for every transaction the session begins, including one begun after commit(), so
    # no statement of a unit of work ever runs unscoped. Listening on the class, once, rather
    # than on each session: registering a listener per request cost more than its query.
    connection.execute(SET_ORG, {"org_id": session.info[ORG_SETTING]})


class SqlUnitOfWork:
    """``async with uow: …; await uow.commit()`` — leaving without ``commit()`` rolls back.

    Single use. The repositories are bound to ``org_id``. Connection failures (on entering, in
    a repository call, on commit) raise ``DatabaseUnavailable``.
    """

    def __init__(
        self,
        database: Database,
        org_id: str,
        on_outbox_commit: Callable[[], None] | None = None,
    ) -> None:
        self.org_id = _require_org(org_id)
        self._on_outbox_commit = on_outbox_commit
        # expire_on_commit=False: nothing is read through the ORM, and nothing should be
        # reloaded lazily after the transaction ended.
        self._session = AsyncSession(
            database.engine,
            sync_session_class=OrgScopedSession if database.is_postgres else Session,
            info={ORG_SETTING: self.org_id},
            expire_on_commit=False,
            autoflush=False,
        )
        self._entered = False
        self._postgres = database.is_postgres
        # Typed as the ports: the UnitOfWork protocol's attributes are mutable, hence invariant.
        self.uploads: UploadRepository = SqlUploadRepository(self._session, self.org_id)
        self.assets: AssetRepository = SqlAssetRepository(self._session, self.org_id)
        self.jobs: JobRepository = SqlJobRepository(self._session, self.org_id)
        self.webhooks: WebhookEndpointRepository = SqlWebhookEndpointRepository(
            self._session, self.org_id
        )
        self._deliveries = SqlWebhookDeliveryRepository(self._session, self.org_id)
        self.deliveries: WebhookDeliveryRepository = self._deliveries
        self.frames: FrameRepository = SqlFrameRepository(self._session, self.org_id)

    @property
    def session(self) -> AsyncSession:
        """The transaction's session, for adapter code and tests (use cases see only the port)."""
        return self._session

    async def __aenter__(self) -> SqlUnitOfWork:
        if self._entered:
            raise RuntimeError("a unit of work is used once; make another")
        self._entered = True
        try:
            with database_errors():
                # Begin now, not at the first query: an unreachable database fails here, and
                # on PostgreSQL the organisation is set before anything else runs.
                await self._session.connection()
        except BaseException:
            await self._close_quietly()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        failure = exc_info[1] if len(exc_info) > 1 else None
        try:
            with database_errors():
                try:
                    await self._session.rollback()  # a no-op right after commit()
                finally:
                    await self._session.close()
        except Exception:
            if failure is None:
                raise
            # The body's own error is the one worth reporting; the pool drops the connection.

    async def commit(self) -> None:
        with database_errors():
            await self._session.commit()
        if self._deliveries.added and self._on_outbox_commit is not None:
            # Events were committed: a deliverer in this process sends them now rather than at
            # its next sweep.
            self._deliveries.added = False
            self._on_outbox_commit()

    async def lock_org(self) -> None:
        # SQLite needs none: every transaction begins IMMEDIATE, holding the one write lock.
        if self._postgres:
            with database_errors():
                await self._session.execute(LOCK_ORG, {"key": f"heimdex.org:{self.org_id}"})

    async def _close_quietly(self) -> None:
        # Already failing: a close that fails too adds nothing (the pool drops the connection).
        with contextlib.suppress(Exception):
            await self._session.close()


class SqlUnitOfWorkFactory:
    """The ``UnitOfWorkFactory`` over one ``Database``: ``factory(org_id)`` is a fresh unit."""

    def __init__(self, database: Database) -> None:
        self._database = database
        #: called after a commit that wrote webhook deliveries (the outbox)
        self.on_outbox_commit: Callable[[], None] | None = None

    def __call__(self, org_id: str) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._database, org_id, self.on_outbox_commit)
