"""The Alembic history: a stairway (every revision up, down and up again) on SQLite and
PostgreSQL, and no drift between the migrated schema and the models in ``tables.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.types import GUID
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.migrations import alembic_config, downgrade, upgrade
from heimdex.adapters.db.tables import TENANT_TABLES, metadata


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, as the role that owns its schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/stairway.db"
    url: str = request.getfixturevalue("empty_postgres_owner_url")
    return url


def revisions(url: str) -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(url))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def run(url: str, work: Any) -> Any:
    """Run ``work(sync_connection)`` on a short-lived engine (Alembic's inspection is sync)."""

    async def go() -> Any:
        database = Database(url)
        try:
            async with database.engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await database.dispose()

    return asyncio.run(go())


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": True}
    )
    return [change for change in compare_metadata(context, metadata) if not _sqlite_guid(change)]


def _sqlite_guid(change: Any) -> bool:
    # SQLite reflects the BINARY(16) of a UUID column by type affinity, as NUMERIC(16): a false
    # "type changed" that says nothing about the schema.
    steps = change if isinstance(change, list) else [change]
    return all(
        step[0] == "modify_type" and isinstance(step[-1], GUID) and str(step[-2]) == "NUMERIC(16)"
        for step in steps
    )


def test_every_revision_upgrades_downgrades_and_upgrades_again(empty_url: str) -> None:
    history = revisions(empty_url)
    assert history, "no migrations found"
    for previous, revision in zip(["base", *history], history, strict=False):
        upgrade(empty_url, revision)
        downgrade(empty_url, previous)
        upgrade(empty_url, revision)
    assert set(TENANT_TABLES) <= run(empty_url, table_names)

    downgrade(empty_url, "base")
    assert run(empty_url, table_names) == {"alembic_version"}


def test_migrated_schema_matches_the_models(empty_url: str) -> None:
    upgrade(empty_url)
    assert run(empty_url, drift) == []
