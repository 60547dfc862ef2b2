"""The Database adapter and its health check against real SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.migrations import upgrade
from heimdex.domain.errors import DatabaseUnavailable


async def test_check_passes_on_both_backends(database: Database) -> None:
    await database.check()
    assert database.backend in {"sqlite", "postgresql"}


async def test_sqlite_creates_its_directory_under_the_data_dir(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/nested/heimdex.db")
    try:
        await database.check()
        assert (tmp_path / "nested/heimdex.db").exists()
    finally:
        await database.dispose()


async def test_check_fails_when_the_server_is_gone() -> None:
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(DatabaseUnavailable, match="Connect call failed") as raised:
            await database.check()
        assert raised.value.transient  # a server that is down comes back by itself
    finally:
        await database.dispose()


def test_db_upgrade_on_an_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        upgrade("postgresql+asyncpg://postgres@127.0.0.1:1/none")
