"""`heimdex ingest` as a real process: over HTTP against a real `heimdex serve`, and in-process
on the embedded default; duplicates, interruption, files that change or cannot be read."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from heimdex.adapters.heimdex_http import HttpIngestTarget
from heimdex.adapters.source_files import LocalSourceFiles
from heimdex.application.bulk_ingest import (
    BulkIngest,
    FileOutcome,
    FileStatus,
    IngestOptions,
)
from tests.e2e.test_serve import SECRET, Server, environment, mint, start
from tests.fixtures.processes import Heimdex
from tests.fixtures.s3 import MotoServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One `heimdex serve` on the embedded default for the module (each test has its own org)."""
    home = tmp_path_factory.mktemp("served")
    # Warnings only: `start` reads the server's standard error when it stops, and a module's
    # worth of request lines filled the pipe (64 KiB) and blocked the server mid-request.
    server = start(home, HEIMDEX_JWT_SECRET=SECRET, HEIMDEX_LOG_LEVEL="warning")
    yield server, home
    server.stop()


_orgs = iter(range(10_000))


@pytest.fixture
def api(served: tuple[Server, Path]) -> tuple[str, str]:
    """(base URL, a token of an organisation of the test's own)."""
    server, home = served
    return server.base_url, mint(home, "--org", f"ingest-{os.getpid()}-{next(_orgs)}")


def ingest(
    *args: str, cwd: Path, env: dict[str, str] | None = None, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    full = environment(cwd, HEIMDEX_JWT_SECRET=SECRET)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "heimdex", "ingest", "--json", "--no-sidecar", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        user=user,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The --json lines by file name."""
    found = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {Path(item["file"]).name: item for item in found}


def distinct(source: Path, target: Path, salt: str) -> Path:
    """A copy of ``source`` with a different sha256 (trailing bytes the demuxer ignores)."""
    target.write_bytes(source.read_bytes() + salt.encode())
    return target


def assets(base_url: str, token: str) -> list[dict[str, Any]]:
    response = httpx.get(
        base_url + "/v1/assets",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_api_mode_ingests_a_folder_once_with_its_odd_names(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path, vp9_webm: Path
) -> None:
    base_url, token = api
    folder = tmp_path / "footage"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(h264_aac_mp4, folder / "first clip ü.mp4")
    shutil.copy(h264_aac_mp4, folder / "sub" / "same bytes.mp4")  # identical: one asset
    shutil.copy(vp9_webm, folder / "-leading dash.webm")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("not media\n")
    outside = tmp_path / "outside.mp4"
    distinct(h264_aac_mp4, outside, "outside")
    (folder / "link out.mp4").symlink_to(outside)  # out of the tree: not followed

    first = ingest("--api", base_url, "--token", token, "-r", "--", str(folder), cwd=tmp_path)
    by_name = lines(first)
    assert first.returncode == 1, first.stderr  # the empty file failed
    assert {tuple(item) for item in by_name.values()} == {("file", "status", "asset_id", "error")}
    assert by_name["empty.mp4"]["status"] == "failed"
    assert by_name["empty.mp4"]["error"] == "empty_file"
    assert by_name["notes.txt"]["status"] == "skipped"
    assert "link out.mp4" not in by_name
    assert by_name["-leading dash.webm"]["status"] == "ingested"
    pair = [by_name["first clip ü.mp4"], by_name["same bytes.mp4"]]
    assert sorted(p["status"] for p in pair) == ["duplicate", "ingested"]
    assert pair[0]["asset_id"] == pair[1]["asset_id"]
    listed = assets(base_url, token)
    assert len(listed) == 2
    by_sum = {a["sha256"]: a for a in listed}
    assert hashlib.sha256(h264_aac_mp4.read_bytes()).hexdigest() in by_sum

    (folder / "empty.mp4").unlink()
    again = ingest("--api", base_url, "--token", token, "-r", str(folder), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    statuses = {name: item["status"] for name, item in lines(again).items()}
    assert statuses == {
        "first clip ü.mp4": "duplicate",
        "same bytes.mp4": "duplicate",
        "-leading dash.webm": "duplicate",
        "notes.txt": "skipped",
    }
    assert len(assets(base_url, token)) == 2


def test_a_name_that_is_not_utf8_is_ingested_and_printed(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path
) -> None:
    # A Latin-1 name from an old archive: Python gives it lone surrogates, which neither a JSON
    # line nor the init request can carry (each ended the run with a UnicodeEncodeError).
    base_url, token = api
    folder = tmp_path / "archive"
    folder.mkdir()
    (Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9 1999.mp4"))).write_bytes(
        h264_aac_mp4.read_bytes()
    )
    result = ingest("--api", base_url, "--token", token, str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = lines(result).values()
    assert line["status"] == "ingested"
    assert Path(line["file"]).name == "caf\ufffd 1999.mp4"
    (asset,) = assets(base_url, token)
    assert asset["source_name"].startswith("caf")
    assert asset["source_name"].endswith("1999.mp4")


def test_a_named_file_that_is_not_media_or_missing_fails(
    tmp_path: Path, api: tuple[str, str], text_mp4: Path
) -> None:
    base_url, token = api
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text\n")
    result = ingest(
        "--api", base_url, "--token", token, str(notes), str(tmp_path / "gone.mp4"),
        str(text_mp4), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    by_name = lines(result)
    assert by_name["notes.txt"]["error"] == "not_media"
    assert by_name["gone.mp4"]["error"] == "not_found"
    assert by_name["text.mp4"]["error"] == "invalid_media"  # a media name: the server decides
    assert assets(base_url, token) == []


@pytest.mark.parametrize("mistake", ["token", "url"])
def test_a_wrong_token_or_url_is_one_line_not_a_failure_per_file(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path, mistake: str
) -> None:
    base_url, token = api
    for n in range(3):
        distinct(h264_aac_mp4, tmp_path / f"clip{n}.mp4", f"mistake {n}")
    if mistake == "token":
        token = "not-a-token"
    else:
        base_url = "http://127.0.0.1:9"  # nothing listens on discard
    result = ingest("--api", base_url, "--token", token, str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""  # no file was tried
    assert result.stderr.count("\n") == 1, result.stderr
    code = "unauthenticated" if mistake == "token" else "unreachable"
    assert result.stderr.startswith(f"heimdex: {code}: ")


def test_on_a_terminal_a_progress_display_and_the_file_lines_still_on_a_redirected_stdout(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path
) -> None:
    # `heimdex ingest DIR > log` in a terminal: the display is drawn on the terminal (standard
    # error), and the per-file lines go to the log, where they were asked for.
    base_url, token = api
    for n in range(3):
        distinct(h264_aac_mp4, tmp_path / f"clip{n}.mp4", f"terminal {n}")
    controller, terminal = pty.openpty()
    env = environment(tmp_path, HEIMDEX_JWT_SECRET=SECRET)
    env.update(COLUMNS="120", LINES="40", TERM="xterm")
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "ingest", "--no-sidecar", "--api", base_url,
         "--token", token, str(tmp_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(terminal)
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    drawn = b""
    while True:  # until the child's end closes the terminal
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    screen = drawn.decode(errors="replace")
    for drawn_part in ("files", "3/3", "files/s", "bytes"):  # the display
        assert drawn_part in screen
    assert "heimdex ingest" in screen  # the summary table
    assert sorted(line.split()[0] for line in stdout.splitlines()) == ["ingested"] * 3
    assert " -> " not in screen  # each file's line once, where it was sent


def test_api_mode_waits_out_a_rate_limit_instead_of_failing_every_file(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    # docs/security.md suggests a rate limit in production; each file takes four requests, so
    # a folder of small files goes past it, and each 429 ended its file at once (all of them).
    server = start(
        tmp_path,
        HEIMDEX_JWT_SECRET=SECRET,
        HEIMDEX_RATE_LIMIT_PER_SECOND="4",
        HEIMDEX_RATE_LIMIT_BURST="4",
    )
    try:
        token = mint(tmp_path, "--org", "limited")
        folder = tmp_path / "clips"
        folder.mkdir()
        for n in range(5):
            distinct(h264_aac_mp4, folder / f"clip{n}.mp4", f"limited {n}")
        result = ingest("--api", server.base_url, "--token", token, str(folder), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert {item["status"] for item in lines(result).values()} == {"ingested"}
    finally:
        server.stop()


def test_sigint_stops_cleanly_and_a_rerun_resumes(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path
) -> None:
    base_url, token = api
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(12):
        distinct(h264_aac_mp4, folder / f"clip {n:02}.mp4", f"salt {n}")
    env = environment(tmp_path, HEIMDEX_JWT_SECRET=SECRET)
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "ingest", "--json", "--no-sidecar", "--jobs", "1",
         "--api", base_url, "--token", token, str(folder)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    done = [json.loads(process.stdout.readline()) for _ in range(3)]
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    first_run = done + [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert all(item["status"] == "ingested" for item in first_run)
    assert 3 <= len(first_run) < 12
    committed = assets(base_url, token)
    assert len(committed) == len(first_run)  # nothing half made
    assert all(a["status"] == "committed" for a in committed)

    resumed = ingest("--api", base_url, "--token", token, str(folder), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    statuses = [item["status"] for item in lines(resumed).values()]
    assert statuses.count("duplicate") == len(first_run)
    assert statuses.count("ingested") == 12 - len(first_run)
    assert len(assets(base_url, token)) == 12


def test_sigint_on_the_embedded_default_stops_cleanly_and_a_rerun_resumes(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    # The mode a user meets first: the service in this process, on ./data (SQLite).
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(8):
        distinct(h264_aac_mp4, folder / f"clip {n:02}.mp4", f"local salt {n}")
    process = subprocess.Popen(
        [sys.executable, "-m", "heimdex", "ingest", "--json", "--no-sidecar", "--jobs", "1",
         str(folder)],
        cwd=tmp_path, env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    done = [json.loads(process.stdout.readline()) for _ in range(2)]
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    first_run = done + [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert {item["status"] for item in first_run} == {"ingested"}
    assert 2 <= len(first_run) < 8
    with sqlite3.connect(tmp_path / "data" / "heimdex.db") as database:
        (committed,) = database.execute("SELECT count(*) FROM assets").fetchone()
    assert committed == len(first_run)  # nothing half made

    resumed = ingest(str(folder), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    statuses = [item["status"] for item in lines(resumed).values()]
    assert statuses.count("duplicate") == len(first_run)
    assert statuses.count("ingested") == 8 - len(first_run)


class ChangingFiles(LocalSourceFiles):
    """Local files; the one named ``victim`` changes between its hashing and its upload."""

    def __init__(self, victim: str) -> None:
        self.victim = victim

    def chunks(self, path: Path, size: int, on_bytes: Any) -> Any:
        if path.name == self.victim:
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF  # same size, other bytes
            path.write_bytes(bytes(data))
        return super().chunks(path, size, on_bytes)


class Quiet:
    def started(self, name: str) -> None: ...
    def advance_bytes(self, count: int) -> None: ...
    def finished(self, name: str) -> None: ...


async def test_a_file_that_changes_while_read_fails_alone(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path
) -> None:
    base_url, token = api
    for n in range(3):
        distinct(h264_aac_mp4, tmp_path / f"clip{n}.mp4", f"change {n}")
    files = ChangingFiles("clip1.mp4")
    candidates, _ = files.discover([tmp_path], recursive=False)
    outcomes: list[FileOutcome] = []
    async with HttpIngestTarget(base_url, token) as target:
        use_case = BulkIngest(files, target, IngestOptions(jobs=2, sidecar=False))
        await use_case.run(candidates, Quiet(), outcomes.append)
    by_name = {Path(o.file).name: o for o in outcomes}
    assert by_name["clip1.mp4"].status is FileStatus.FAILED
    assert by_name["clip1.mp4"].error == "checksum_mismatch"
    assert by_name["clip0.mp4"].status is FileStatus.INGESTED
    assert by_name["clip2.mp4"].status is FileStatus.INGESTED
    assert len(assets(base_url, token)) == 2


class ResizedFiles(LocalSourceFiles):
    """Local files; the one named ``victim`` grows or shrinks between its hashing and its upload
    (a file still being copied or recorded)."""

    def __init__(self, victim: str, change: int) -> None:
        self.victim, self.change = victim, change

    def chunks(self, path: Path, size: int, on_bytes: Any) -> Any:
        if path.name == self.victim:
            data = path.read_bytes()
            path.write_bytes(data + b"x" * self.change if self.change > 0 else data[: self.change])
        return super().chunks(path, size, on_bytes)


@pytest.mark.parametrize("change", [4096, -10], ids=["grows", "shrinks"])
async def test_a_file_whose_size_changes_while_read_fails_alone(
    tmp_path: Path, api: tuple[str, str], h264_aac_mp4: Path, change: int
) -> None:
    # The upload declares the size it hashed: more or fewer bytes must fail that file, not the
    # HTTP client's framing (which ended the whole run with a traceback).
    base_url, token = api
    for n in range(3):
        distinct(h264_aac_mp4, tmp_path / f"clip{n}.mp4", f"resize {n}")
    files = ResizedFiles("clip1.mp4", change)
    candidates, _ = files.discover([tmp_path], recursive=False)
    outcomes: list[FileOutcome] = []
    async with HttpIngestTarget(base_url, token) as target:
        use_case = BulkIngest(files, target, IngestOptions(jobs=2, sidecar=False))
        await use_case.run(candidates, Quiet(), outcomes.append)
    by_name = {Path(o.file).name: o for o in outcomes}
    assert (by_name["clip1.mp4"].status, by_name["clip1.mp4"].error) == (
        FileStatus.FAILED,
        "file_changed",
    )
    assert by_name["clip0.mp4"].status is FileStatus.INGESTED
    assert by_name["clip2.mp4"].status is FileStatus.INGESTED
    assert len(assets(base_url, token)) == 2


def unfinished_uploads(data_dir: Path) -> int:
    """Upload slots of the embedded database that hold no asset."""
    with sqlite3.connect(data_dir / "heimdex.db") as database:
        (count,) = database.execute(
            "SELECT count(*) FROM uploads WHERE status != 'committed'"
        ).fetchone()
    return int(count)


# Far below the clips' sizes: every file is over the server's limit for one PUT.
_SMALL_PUT_LIMIT = {"HEIMDEX_MAX_UPLOAD_SIZE_BYTES": "4096"}


async def test_api_mode_sends_a_file_over_the_one_put_limit_as_a_resumable_upload(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    # 512 MiB by default, so a few minutes of phone video: such a file goes as one tus PATCH (up
    # to the resumable limit); one that changes on the way fails alone and its slot goes.
    server = start(tmp_path, HEIMDEX_JWT_SECRET=SECRET, **_SMALL_PUT_LIMIT)
    try:
        token = mint(tmp_path, "--org", "large-files")
        folder = tmp_path / "camera"
        folder.mkdir()
        for n in range(3):
            distinct(h264_aac_mp4, folder / f"clip{n}.mp4", f"large {n}")
        files = ResizedFiles("clip1.mp4", 4096)
        candidates, _ = files.discover([folder], recursive=False)
        outcomes: list[FileOutcome] = []
        async with HttpIngestTarget(server.base_url, token) as target:
            use_case = BulkIngest(files, target, IngestOptions(jobs=3, sidecar=False))
            await use_case.run(candidates, Quiet(), outcomes.append)
        by_name = {Path(o.file).name: (o.status, o.error) for o in outcomes}
        assert by_name == {
            "clip0.mp4": (FileStatus.INGESTED, None),
            "clip1.mp4": (FileStatus.FAILED, "file_changed"),
            "clip2.mp4": (FileStatus.INGESTED, None),
        }
        listed = assets(server.base_url, token)
        assert {a["size_bytes"] for a in listed} == {h264_aac_mp4.stat().st_size + 7}
        assert unfinished_uploads(tmp_path / "data") == 0  # clip1's slot was terminated
    finally:
        server.stop()


def test_in_process_mode_sends_a_file_over_the_one_put_limit_as_a_resumable_upload(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    shutil.copy(h264_aac_mp4, tmp_path / "a.mp4")
    result = ingest(str(tmp_path / "a.mp4"), cwd=tmp_path, env=_SMALL_PUT_LIMIT)
    assert result.returncode == 0, result.stderr
    assert lines(result)["a.mp4"]["status"] == "ingested"
    assert unfinished_uploads(tmp_path / "data") == 0


async def test_an_unreadable_file_fails_and_the_others_go_on(
    api: tuple[str, str], h264_aac_mp4: Path
) -> None:
    base_url, token = api
    # Root reads every file: as root the run takes nobody's identity (effective ids), in a
    # folder nobody can enter.
    folder = Path(tempfile.mkdtemp(prefix="heimdex-ingest-"))
    as_root = os.geteuid() == 0
    outcomes: list[FileOutcome] = []
    try:
        folder.chmod(0o755)
        distinct(h264_aac_mp4, folder / "readable.mp4", "readable").chmod(0o644)
        distinct(h264_aac_mp4, folder / "locked.mp4", "locked").chmod(0o000)
        files = LocalSourceFiles()
        if as_root:
            os.setegid(65534)
            os.seteuid(65534)
        try:
            candidates, known = files.discover([folder], recursive=False)
            async with HttpIngestTarget(base_url, token) as target:
                use_case = BulkIngest(files, target, IngestOptions(sidecar=False))
                await use_case.run(candidates, Quiet(), outcomes.append)
        finally:
            if as_root:
                os.seteuid(0)
                os.setegid(0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert [(Path(o.file).name, o.error) for o in known] == [("locked.mp4", "unreadable")]
    assert [(Path(o.file).name, o.status) for o in outcomes] == [
        ("readable.mp4", FileStatus.INGESTED)
    ]


def test_in_process_mode_on_the_embedded_default(
    tmp_path: Path, h264_aac_mp4: Path, vp9_webm: Path
) -> None:
    shutil.copy(h264_aac_mp4, tmp_path / "a.mp4")
    shutil.copy(vp9_webm, tmp_path / "b.webm")
    first = ingest(str(tmp_path / "a.mp4"), str(tmp_path / "b.webm"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    made = lines(first)
    assert {item["status"] for item in made.values()} == {"ingested"}
    second = ingest("--org", "local", str(tmp_path / "a.mp4"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = lines(second)["a.mp4"]
    assert again["status"] == "duplicate"
    assert again["asset_id"] == made["a.mp4"]["asset_id"]
    other_org = ingest("--org", "elsewhere", str(tmp_path / "a.mp4"), cwd=tmp_path)
    assert lines(other_org)["a.mp4"]["status"] == "ingested"  # duplicates are per organisation


@pytest.mark.parametrize("mode", ["in-process", "api"])
def test_a_rerun_asks_for_the_sidecar_a_stopped_run_never_asked_for(
    tmp_path: Path, h264_aac_mp4: Path, request: pytest.FixtureRequest, mode: str
) -> None:
    # Committed without a sidecar request: a run stopped between the two, or --no-sidecar.
    target: list[str] = []
    if mode == "api":
        base_url, token = request.getfixturevalue("api")
        target = ["--api", base_url, "--token", token]
    clip = str(distinct(h264_aac_mp4, tmp_path / "a.mp4", f"rerun {mode}"))
    first = ingest(*target, clip, cwd=tmp_path)
    assert lines(first)["a.mp4"]["status"] == "ingested"
    again = subprocess.run(
        [sys.executable, "-m", "heimdex", "ingest", "--json", "--wait", *target, clip],
        cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert lines(again)["a.mp4"]["status"] == "duplicate"
    if mode == "api":
        statuses = [a["status"] for a in assets(base_url, token)]
    else:
        with sqlite3.connect(tmp_path / "data" / "heimdex.db") as database:
            statuses = [row[0] for row in database.execute("SELECT status FROM assets")]
    assert statuses == ["ready"]  # its sidecar was asked for, and --wait waited for it


@pytest.mark.postgres
@pytest.mark.redis
def test_api_mode_on_postgres_redis_a_worker_and_s3(
    heimdex_deployment: Heimdex,
    moto_server: MotoServer,
    s3_bucket: str,
    h264_aac_mp4: Path,
    vp9_webm: Path,
) -> None:
    deployment = heimdex_deployment
    deployment.env.update(moto_server.deployment_env(s3_bucket))
    deployment.serve()
    deployment.worker("worker")
    token = deployment.token("acme")
    folder = deployment.workdir / "to ingest"
    folder.mkdir()
    shutil.copy(h264_aac_mp4, folder / "a.mp4")
    shutil.copy(vp9_webm, folder / "b.webm")
    run = subprocess.run(
        [sys.executable, "-m", "heimdex", "ingest", "--json", "--wait", str(folder)],
        cwd=deployment.workdir,
        env={**deployment.env, "HEIMDEX_API_URL": deployment.base_url, "HEIMDEX_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr + deployment.logs()
    assert {item["status"] for item in lines(run).values()} == {"ingested"}
    keys = {
        item["Key"]
        for item in moto_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    }
    assert sum(1 for k in keys if k.startswith("uploads/acme/")) == 2  # straight to the bucket
    assert sum(1 for k in keys if k.startswith("derived/acme/sidecars/")) == 2  # --wait waited
    listed = assets(deployment.base_url, token)
    assert {a["status"] for a in listed} == {"ready"}


def test_in_process_beside_a_running_serve_on_the_same_data(
    tmp_path: Path, h264_aac_mp4: Path
) -> None:
    # `make run` and `heimdex ingest` at once on ./data: SQLite in WAL mode with a busy
    # timeout; the sidecar jobs left queued are handed over by the server's sweep.
    server = start(tmp_path, HEIMDEX_JWT_SECRET=SECRET, HEIMDEX_SWEEP_INTERVAL_SECONDS="0.5")
    try:
        for n in range(3):
            distinct(h264_aac_mp4, tmp_path / f"clip{n}.mp4", f"beside {n}")
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "heimdex",
                "ingest",
                "--json",
                *(f"clip{n}.mp4" for n in range(3)),
            ],
            cwd=tmp_path,
            env=environment(tmp_path, HEIMDEX_JWT_SECRET=SECRET),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        token = mint(tmp_path, "--org", "local")
        deadline = time.monotonic() + 90
        while {a["status"] for a in assets(server.base_url, token)} != {"ready"}:
            assert time.monotonic() < deadline, assets(server.base_url, token)
            time.sleep(0.5)
        assert len(assets(server.base_url, token)) == 3
    finally:
        server.stop()
