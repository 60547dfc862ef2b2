"""A command whose reader goes away (``heimdex … | head``): status 1, no traceback, and for
``ingest`` nothing half-made, so that the next run picks up where this one stopped.

The read end of the pipe is closed before the command writes anything, so its first write
meets the closed pipe whatever the machine's speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_ingest import ingest
from tests.e2e.test_serve import SECRET, environment


def run_into_closed_pipe(*args: str, cwd: Path) -> tuple[int, str]:
    """``heimdex ARGS`` with standard output a pipe nobody reads: (status, standard error)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", *args],
        cwd=cwd,
        env=environment(cwd, HEIMDEX_JWT_SECRET=SECRET),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()
    try:
        err = process.stderr.read()
        status = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return status, err


def distinct_clips(source: Path, folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    clips = []
    for n in range(count):
        clip = folder / f"clip {n}.mp4"
        clip.write_bytes(source.read_bytes() + f"salt {n}".encode())  # a sha256 of its own
        clips.append(clip)
    return clips


def assert_quiet_failure(status: int, err: str) -> None:
    assert status == 1, err
    assert "Traceback" not in err, err
    assert "BrokenPipe" not in err, err
    assert "Exception ignored" not in err, err


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param([], id="plain one file"),
        pytest.param(["--json"], id="json one file"),
    ],
)
def test_probe_into_a_closed_pipe_fails_quietly(
    tmp_path: Path, h264_aac_mp4: Path, flags: list[str]
) -> None:
    status, err = run_into_closed_pipe("probe", *flags, str(h264_aac_mp4), cwd=tmp_path)
    assert_quiet_failure(status, err)


def test_probe_of_many_files_into_a_closed_pipe_fails_quietly(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    clips = distinct_clips(h264_aac_mp4, tmp_path / "clips", 3)
    status, err = run_into_closed_pipe("probe", "--json", *map(str, clips), cwd=tmp_path)
    assert_quiet_failure(status, err)


def test_a_typer_command_into_a_closed_pipe_fails_quietly(tmp_path: Path) -> None:
    status, err = run_into_closed_pipe("token", "--org", "acme", cwd=tmp_path)
    assert_quiet_failure(status, err)


def test_ingest_into_a_closed_pipe_stops_quietly_and_the_next_run_resumes(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    clips = distinct_clips(h264_aac_mp4, tmp_path / "footage", 4)
    args = ("--jobs", "2", str(tmp_path / "footage"))

    status, err = run_into_closed_pipe("ingest", "--json", "--no-sidecar", *args, cwd=tmp_path)
    assert_quiet_failure(status, err)

    again = ingest(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    outcomes = [json.loads(line) for line in again.stdout.splitlines()]
    assert sorted(Path(o["file"]).name for o in outcomes) == sorted(c.name for c in clips)
    # What the first run committed is a duplicate now; the rest is ingested whole.
    assert {o["status"] for o in outcomes} <= {"ingested", "duplicate"}
    assert len({o["asset_id"] for o in outcomes}) == len(clips)
