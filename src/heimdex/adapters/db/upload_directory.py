"""``SqlUploadDirectory``: which upload slots were abandoned, across organisations. On
PostgreSQL through the SECURITY DEFINER function of migration 0004, which answers ids only, so
the runtime role still reads only its own organisation's rows."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import exists, select, text

from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.tables import metadata
from heimdex.domain.model import UploadStatus

UPLOADS = metadata.tables["uploads"]
ASSETS = metadata.tables["assets"]


class SqlUploadDirectory:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def abandoned(self, expired_before: datetime, limit: int) -> list[tuple[UUID, str]]:
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text("SELECT id, org_id FROM heimdex_abandoned_uploads(:before, :lim)"),
                        {"before": expired_before, "lim": limit},
                    )
                else:
                    result = await connection.execute(
                        select(UPLOADS.c.id, UPLOADS.c.org_id)
                        .where(
                            UPLOADS.c.status != UploadStatus.COMMITTED.value,
                            UPLOADS.c.expires_at < expired_before,
                            ~exists().where(ASSETS.c.upload_id == UPLOADS.c.id),
                        )
                        .order_by(UPLOADS.c.expires_at)
                        .limit(limit)
                    )
                return [(UUID(str(row[0])), str(row[1])) for row in result.all()]
