"""compose.yaml's PostgreSQL init script, run for real on a throwaway cluster: the roles it
creates let `heimdex db upgrade` migrate as the owner, and the service's role passes the
tenancy check production insists on (not the owner, not a superuser, no BYPASSRLS).

The postgres image runs the script on an empty volume; here it runs against a cluster made
with initdb for this test alone, since it creates fixed role names (``heimdex``,
``heimdex_owner``, ``heimdex_app``) that must not touch the machine's shared server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from heimdex.adapters.db.engine import Database
from heimdex.adapters.db.migrations import upgrade
from heimdex.adapters.db.tenancy_report import tenancy_report
from tests.fixtures.postgres_cluster import server_binary
from tests.requirements import require_binary

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy/postgres/10-heimdex-roles.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def throwaway_cluster() -> Iterator[int]:
    """A PostgreSQL cluster of this test's own on a free port; answers the port."""
    initdb, postgres = server_binary("initdb"), server_binary("postgres")
    require_binary("psql")
    # The server refuses to run as root: as root, run it as the postgres user.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-pg-"))
    if as_postgres:
        shutil.chown(workdir, user="postgres")
    data, port = workdir / "data", _free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [*as_postgres, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        server = subprocess.Popen(
            [
                *as_postgres,
                postgres,
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(workdir),
                *settings,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.poll() is None, "the throwaway PostgreSQL did not start"
                assert time.monotonic() < deadline, "the throwaway PostgreSQL did not answer"
                time.sleep(0.1)
        yield port
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def _compose_environment() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    env: dict[str, str] = compose["x-heimdex-env"]
    return env


def _user_of(url: str) -> str:
    return url.split("://", 1)[1].split(":", 1)[0]


def test_compose_connects_as_the_roles_the_script_creates() -> None:
    env = _compose_environment()
    script = SCRIPT.read_text(encoding="utf-8")
    assert _user_of(env["HEIMDEX_MIGRATION_DATABASE_URL"]) == "heimdex_owner"
    assert _user_of(env["HEIMDEX_DATABASE_URL"]) == "heimdex"
    assert "CREATE DATABASE heimdex OWNER heimdex_owner" in script
    assert "IN ROLE heimdex_app" in script
    assert os.access(SCRIPT, os.X_OK)


def test_the_init_script_makes_roles_production_accepts(throwaway_cluster: int) -> None:
    port = throwaway_cluster
    env = {
        **os.environ,
        "POSTGRES_USER": "postgres",  # what the postgres image runs its init scripts with
        "PGHOST": "127.0.0.1",
        "PGPORT": str(port),
        "DB_OWNER_PASSWORD": "owner-secret",
        "DB_APP_PASSWORD": "app-secret",
    }
    subprocess.run(["sh", str(SCRIPT)], env=env, check=True, capture_output=True)

    upgrade(f"postgresql+asyncpg://heimdex_owner@127.0.0.1:{port}/heimdex")

    async def report_and_roles() -> tuple[object, list[asyncpg.Record]]:
        database = Database(f"postgresql+asyncpg://heimdex@127.0.0.1:{port}/heimdex")
        try:
            report = await tenancy_report(database)
        finally:
            await database.dispose()
        admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        try:
            roles = await admin.fetch(
                "SELECT rolname, rolsuper, rolbypassrls, rolpassword IS NOT NULL AS has_password"
                " FROM pg_authid WHERE rolname IN ('heimdex', 'heimdex_owner') ORDER BY rolname"
            )
        finally:
            await admin.close()
        return report, roles

    report, roles = asyncio.run(report_and_roles())
    assert report.enforced, report  # type: ignore[attr-defined]
    assert report.problems == [], report  # type: ignore[attr-defined]
    assert report.role == "heimdex"  # type: ignore[attr-defined]
    assert [(r["rolname"], r["rolsuper"], r["rolbypassrls"], r["has_password"]) for r in roles] == [
        ("heimdex", False, False, True),
        ("heimdex_owner", False, False, True),
    ]
