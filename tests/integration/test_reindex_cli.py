"""``heimdex reindex`` on the embedded default: assets processed before fingerprints existed
(their frames removed here) get them back through sidecar jobs; a second run has nothing to do;
``--org`` keeps to one organisation."""

from __future__ import annotations

import sqlite3
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


def frames_by_org(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT org_id, count(*) FROM frames GROUP BY org_id").fetchall()
    return {str(org): int(count) for org, count in rows}


def forget_frames(database: Path) -> None:
    """What a database migrated from before fingerprints holds: assets, and no frames."""
    with sqlite3.connect(database) as connection:
        connection.execute("DELETE FROM frames")


def test_reindex_fingerprints_the_assets_without_frames_and_resumes(
    data_dir: Path, clips: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    database = data_dir / "heimdex.db"
    for org in ("acme", "other"):
        assert main(["ingest", *map(str, clips), "--org", org, "--wait", "--json"]) == 0
    made = frames_by_org(database)
    assert made["acme"] > 4
    assert made["other"] == made["acme"]
    forget_frames(database)
    capsys.readouterr()

    assert main(["reindex", "--dry-run"]) == 0
    assert "4 assets to fingerprint" in capsys.readouterr().out
    assert frames_by_org(database) == {}

    assert main(["reindex", "--org", "acme"]) == 0
    assert "2 assets fingerprinted, 0 without fingerprints, of 2" in capsys.readouterr().out
    assert frames_by_org(database) == {"acme": made["acme"]}  # the same frames as at first

    # Everything, resumed: only the other organisation's assets are left to do.
    assert main(["reindex", "--jobs", "1"]) == 0
    assert "2 assets fingerprinted, 0 without fingerprints, of 2" in capsys.readouterr().out
    assert frames_by_org(database) == made
    assert main(["reindex"]) == 0
    assert "0 assets fingerprinted, 0 without fingerprints, of 0" in capsys.readouterr().out


def test_reindex_refuses_a_bad_organisation(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reindex", "--org", "not an org!"]) == 2
    assert "--org" in capsys.readouterr().err
