"""Applies the Alembic history in ``migrations/`` (``heimdex db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import DBAPIError

from heimdex.adapters.db.engine import ensure_sqlite_directory
from heimdex.domain.errors import DatabaseUnavailable, HeimdexError


class MigrationsNotFound(HeimdexError):
    code = "migrations_not_found"
    title = "The migrations directory was not found"


def migrations_dir(configured: Path | None = None) -> Path:
    """``HEIMDEX_MIGRATIONS_DIR``, else ``./migrations``, else the source checkout's."""
    candidates = [
        configured,
        Path.cwd() / "migrations",
        Path(__file__).resolve().parents[4] / "migrations",
    ]
    for candidate in candidates:
        if candidate is not None and (candidate / "env.py").is_file():
            return candidate
    raise MigrationsNotFound("no migrations directory with env.py; set HEIMDEX_MIGRATIONS_DIR")


def alembic_config(database_url: str, directory: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir(directory)))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head", directory: Path | None = None) -> None:
    ensure_sqlite_directory(database_url)
    try:
        command.upgrade(alembic_config(database_url, directory), revision)
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"the database refused the migration: {exc.orig}") from exc
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc}") from exc


def downgrade(database_url: str, revision: str, directory: Path | None = None) -> None:
    """Step the schema back to ``revision`` (``"-1"``, ``"base"``, …); the stairway test's half."""
    try:
        command.downgrade(alembic_config(database_url, directory), revision)
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"the database refused the migration: {exc.orig}") from exc
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot reach the database: {exc}") from exc
