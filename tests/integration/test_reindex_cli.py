"""``heimdex reindex`` on the embedded default: assets processed before fingerprints existed
(their frames removed here) get them back through sidecar jobs; a second run has nothing to do;
``--org`` keeps to one organisation. Run as processes, as a user does (and so that the commands'
logging set-up stays out of this test process)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from heimdex.entrypoints.cli import main
from tests.fixtures.media import MediaFactory


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("HEIMDEX_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    return data


@pytest.fixture(scope="session")
def clips(media_factory: MediaFactory) -> list[Path]:
    return [
        media_factory(
            f"reindex_{name}.mp4",
            *("-f", "lavfi", "-i", f"{source}=size=320x180:rate=25", "-t", "4"),
            *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        )
        for name, source in (("a", "mandelbrot"), ("b", "testsrc2"))
    ]


def heimdex(*args: str) -> tuple[int, str]:
    """``heimdex ARGS`` in the current directory: its exit status and standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "heimdex", *args],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def frames_by_org(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT org_id, count(*) FROM frames GROUP BY org_id").fetchall()
    return {str(org): int(count) for org, count in rows}


def forget_frames(database: Path) -> None:
    """What a database migrated from before fingerprints holds: assets, and no frames."""
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM frames")


def test_reindex_fingerprints_the_assets_without_frames_and_resumes(
    data_dir: Path, clips: list[Path]
) -> None:
    database = data_dir / "heimdex.db"
    for org in ("acme", "other"):
        status, out = heimdex("ingest", *map(str, clips), "--org", org, "--wait", "--json")
        assert status == 0, out
    made = frames_by_org(database)
    assert made["acme"] > 4
    assert made["other"] == made["acme"]
    forget_frames(database)

    status, out = heimdex("reindex", "--dry-run")
    assert status == 0, out
    assert "4 assets to fingerprint" in out
    assert frames_by_org(database) == {}

    status, out = heimdex("reindex", "--org", "acme")
    assert status == 0, out
    assert "2 assets fingerprinted, 0 without fingerprints, of 2" in out
    assert frames_by_org(database) == {"acme": made["acme"]}  # the same frames as at first

    # Everything, resumed: only the other organisation's assets are left to do.
    status, out = heimdex("reindex", "--jobs", "1")
    assert status == 0, out
    assert "2 assets fingerprinted, 0 without fingerprints, of 2" in out
    assert frames_by_org(database) == made
    status, out = heimdex("reindex")
    assert status == 0, out
    assert "0 assets fingerprinted, 0 without fingerprints, of 0" in out


def test_reindex_refuses_a_bad_organisation(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reindex", "--org", "not an org!"]) == 2
    assert "--org" in capsys.readouterr().err


def test_reindex_runs_a_job_left_queued_without_a_message(
    data_dir: Path, clips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run stopped between a job's commit and its hand-over leaves it queued with no message;
    # the next run waits for that job rather than asking twice, so its sweep must hand it over.
    monkeypatch.setenv("HEIMDEX_SWEEP_INTERVAL_SECONDS", "0.2")
    database = data_dir / "heimdex.db"
    status, out = heimdex("ingest", str(clips[0]), "--org", "acme", "--wait", "--json")
    assert status == 0, out
    forget_frames(database)
    with sqlite3.connect(database) as connection:
        changed = connection.execute(
            "UPDATE jobs SET status = 'queued', enqueued_at = NULL, next_attempt_at = NULL, "
            "lease_owner = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL"
        ).rowcount
    assert changed == 1

    result = subprocess.run(
        [sys.executable, "-m", "heimdex", "reindex"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,  # without the sweep it waits for ever
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 assets fingerprinted, 0 without fingerprints, of 1" in result.stdout
