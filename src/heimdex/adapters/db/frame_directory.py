"""``SqlFrameDirectory``: which assets of any organisation have no fingerprinted frame yet
(``heimdex reindex``). On PostgreSQL through a SECURITY DEFINER function that answers ids only
(migration 0011), so the runtime role still reads only its own organisation's rows."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import exists, literal, select, text, tuple_

from heimdex.adapters.db.engine import Database, database_errors
from heimdex.adapters.db.tables import metadata
from heimdex.domain.model import AssetStatus

ASSETS = metadata.tables["assets"]
FRAMES = metadata.tables["frames"]


class SqlFrameDirectory:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def unindexed(
        self, *, after: tuple[str, UUID] | None, limit: int
    ) -> list[tuple[str, UUID]]:
        """(org_id, asset id) of ready video assets without a fingerprinted frame, in that
        order, after ``after``."""
        with database_errors():
            async with self._database.engine.connect() as connection:
                if self._database.is_postgres:
                    result = await connection.execute(
                        text("SELECT org_id, id FROM heimdex_unindexed_assets(:org, :id, :lim)"),
                        {
                            "org": after[0] if after else None,
                            "id": after[1] if after else None,
                            "lim": limit,
                        },
                    )
                else:
                    query = (
                        select(ASSETS.c.org_id, ASSETS.c.id)
                        .where(
                            ASSETS.c.status == AssetStatus.READY.value,
                            ASSETS.c.video_codec.is_not(None),
                            ~exists().where(
                                FRAMES.c.org_id == ASSETS.c.org_id,
                                FRAMES.c.asset_id == ASSETS.c.id,
                            ),
                        )
                        .order_by(ASSETS.c.org_id, ASSETS.c.id)
                        .limit(limit)
                    )
                    if after is not None:
                        query = query.where(
                            tuple_(ASSETS.c.org_id, ASSETS.c.id)
                            > tuple_(literal(after[0]), literal(after[1], ASSETS.c.id.type))
                        )
                    result = await connection.execute(query)
                return [(str(row[0]), UUID(str(row[1]))) for row in result.all()]
