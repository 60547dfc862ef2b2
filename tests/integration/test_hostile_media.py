"""Hostile media through the real HTTP probe endpoint and a real sidecar job, on the embedded
default (SQLite, local storage, in-process jobs, decode pool with its limits).

Every file is generated here with ffmpeg or by hand: playlists disguised as ``.mp4`` that name a
sentinel file, H.264 sequence headers declaring 100000x100000 and 16000x16000 frames, a FIFO, a
terabyte file that never ends (sparse), zero bytes, an MP4 cut in half, text named ``.mp4``, a
name that looks like ffmpeg options, a thousand streams. Each must end as a typed 4xx or as a
``failed`` job with its code, after a bounded number of attempts, with no process left behind
and the service still making a good file's sidecar afterwards.

Commit probes the upload, so a file the probers refuse never becomes an asset. To push the same
bytes through a sidecar job, the test commits a good file of the same kind (a *decoy*) and then
replaces the stored object with the hostile one — what a job would meet if a prober were fooled
or the bytes changed behind its back; the thumbnailer forces the demuxer the prober found.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.fixtures.app import (
    TokenFactory,
    bearer,
    ingest_file,
    init_upload,
    put_upload,
    wait_for_job,
)
from tests.fixtures.frame_bombs import declaring_frame
from tests.fixtures.media import MediaFactory, atime_is_recorded
from tests.fixtures.processes import child_processes
from tests.requirements import require_binary

pytestmark = pytest.mark.ffmpeg

PROBE = "/v1/ingest/probe"
SECRET = "HEIMDEX-SENTINEL-7f3a9c"  # in the sentinel's tags and bytes; must never come back
TIMEOUT = 2.0  # the thumbnail timeout of the app under test


# -- hostile files -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hostile:
    path: Path
    decoy: Path  # a good file of the same kind, committed before its bytes are replaced


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def small_h264(media_factory: MediaFactory) -> Path:
    """A good raw H.264 elementary stream, 64x64, 1 s, baseline (the SPS the bombs rewrite)."""
    return media_factory(
        "small.h264",
        *("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1"),
        *("-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast"),
        *("-pix_fmt", "yuv420p", "-f", "h264"),
    )


@pytest.fixture(scope="module")
def small_mkv(media_factory: MediaFactory, small_h264: Path) -> Path:
    return media_factory("small.mkv", "-i", str(small_h264), "-c", "copy")


@pytest.fixture(scope="module")
def sentinel(media_factory: MediaFactory) -> Path:
    """What the playlists name: real media carrying the secret in its tags."""
    return media_factory(
        "sentinel.mkv",
        *("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-metadata", f"title={SECRET}"),
        *("-metadata:s:v:0", f"title={SECRET}"),
    )


@pytest.fixture(scope="module")
def hostile(
    hostile_dir: Path,
    media_factory: MediaFactory,
    h264_aac_mp4: Path,
    small_h264: Path,
    small_mkv: Path,
    sentinel: Path,
) -> dict[str, Hostile]:
    files: dict[str, Hostile] = {}
    # An HLS playlist naming the sentinel by its absolute path, and an ffconcat list naming it
    # as a neighbour (the concat demuxer's safe mode allows only names below its own folder).
    hls = hostile_dir / "playlist.mp4"
    hls.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n{sentinel}\n#EXT-X-ENDLIST\n")
    files["hls_playlist"] = Hostile(hls, h264_aac_mp4)
    concat = hostile_dir / "list.mp4"
    concat.write_text(f"ffconcat version 1.0\nfile {sentinel.name}\n")
    (hostile_dir / sentinel.name).write_bytes(sentinel.read_bytes())  # for the control
    files["concat_list"] = Hostile(concat, h264_aac_mp4)
    # FFmpeg's own bound refuses this one. The next one only max_pixels stops: without it,
    # ffprobe alone takes ≈ 9 s and 1.3 GB resident on it (ffmpeg: 2 GB for one frame).
    files["frame_100000x100000"] = Hostile(
        declaring_frame(small_h264, hostile_dir / "huge.mp4", 100_000, 100_000), small_h264
    )
    files["frame_16000x16000"] = Hostile(
        declaring_frame(small_h264, hostile_dir / "bomb.mp4", 16_000, 16_000), small_h264
    )
    files["zero_bytes"] = Hostile(hostile_dir / "zero.mp4", h264_aac_mp4)
    files["zero_bytes"].path.write_bytes(b"")
    whole = media_factory(
        "moov_last.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    )
    data = whole.read_bytes()
    files["truncated_half"] = Hostile(hostile_dir / "half.mp4", h264_aac_mp4)
    files["truncated_half"].path.write_bytes(data[: len(data) // 2])
    files["text"] = Hostile(hostile_dir / "notes.mp4", h264_aac_mp4)
    files["text"].path.write_text("This is not a video.\n" * 200)
    streams = [arg for _ in range(999) for arg in ("-map", "0:a")]
    many = media_factory(
        "many_streams.mkv",
        *("-f", "lavfi", "-i", "sine=duration=0.2:sample_rate=8000"),
        *streams,
        *("-c:a", "pcm_u8"),
    )
    files["thousand_streams"] = Hostile(many, small_mkv)
    return files


# Stand-ins made in storage after the upload: no client can send a FIFO or a terabyte.
SPECIAL = ["fifo", "endless"]


def _make_special(kind: str, path: Path) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:  # a terabyte of nothing: reading it never ends in any useful time
        with path.open("wb") as handle:
            handle.truncate(1 << 40)


# -- the app -------------------------------------------------------------------------------------
@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "probe_timeout_seconds": 5.0,
        "thumbnail_timeout_seconds": TIMEOUT,
        "decode_workers": 1,
        "job_retry_base_seconds": 0.05,
        "sweep_interval_seconds": 0.1,
    }
    overrides.update(getattr(request, "param", {}))
    return overrides


def stored(data_dir: Path, upload_id: str) -> Path:
    """The stored object of an upload, under the local storage root."""
    found = list((data_dir / "storage" / "uploads").glob(f"*/{upload_id}/*"))
    assert len(found) == 1, found
    return found[0]


async def sidecar_job(
    client: AsyncTestClient[Litestar], token: str, asset_id: str
) -> dict[str, Any]:
    body = {"thumbnails": {"count": 2}}
    accepted = await client.post(f"/v1/assets/{asset_id}/sidecar", json=body, headers=bearer(token))
    assert accepted.status_code == 202, accepted.text
    return await wait_for_job(client, token, accepted.headers["location"])


def assert_no_process_left() -> None:
    """No zombie child, and no ffmpeg/ffprobe (or their nice/prlimit wrappers) still running;
    the decode pool's workers and forkserver are meant to stay."""
    left = [
        (pid, state, name)
        for pid, state, name in child_processes()
        if state == "Z" or name in ("ffmpeg", "ffprobe", "nice", "prlimit")
    ]
    assert not left, left


def assert_secret_kept(
    answers: list[str], data_dir: Path, caplog: pytest.LogCaptureFixture, logged: str, *skip: Path
) -> None:
    """The sentinel's secret is in no answer, no file under the data dir, no log line."""
    for answer in answers:
        assert SECRET not in answer
    for path in data_dir.rglob("*"):
        if path in skip or not path.is_file() or path.stat().st_size > 64 << 20:
            continue  # FIFOs would block; the sparse terabyte holds nothing
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    assert all(SECRET not in str(record.msg) for record in caplog.records)
    assert SECRET not in logged


PROBE_EXPECTED = {
    "hls_playlist": "invalid_media",
    "concat_list": "invalid_media",
    "frame_100000x100000": "invalid_media",
    "frame_16000x16000": "media_too_large",
    "zero_bytes": "invalid_media",
    "truncated_half": "invalid_media",
    "text": "invalid_media",
    "thousand_streams": "too_many_streams",
}


# -- the probe endpoint --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings_overrides", [{"prober": "pyav"}, {"prober": "ffprobe"}], indirect=True, ids=str
)
@pytest.mark.parametrize("case", sorted(PROBE_EXPECTED))
async def test_the_probe_endpoint_answers_a_typed_422(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    hostile: dict[str, Hostile],
    sentinel: Path,
    h264_aac_mp4: Path,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    case: str,
) -> None:
    token = make_token()
    path = hostile[case].path
    if case == "zero_bytes":
        # Init refuses to expect nothing; an empty object in storage is probed all the same.
        empty = await client.post(
            "/v1/ingest/init",
            json={"source_name": path.name, "content_length": 0, "content_type": "video/mp4"},
            headers=bearer(token),
        )
        assert (empty.status_code, empty.json()["code"]) == (400, "invalid_request")
        init = await init_upload(client, token, h264_aac_mp4)
        assert (await put_upload(client, init, h264_aac_mp4.read_bytes())).status_code == 200
        stored(data_dir, init["upload_id"]).write_bytes(b"")
    else:
        init = await init_upload(client, token, path)
        assert (await put_upload(client, init, path.read_bytes())).status_code == 200
    neighbour = None
    if case == "concat_list":  # the list's neighbour, as if the attacker had put it there
        neighbour = stored(data_dir, init["upload_id"]).parent / sentinel.name
        neighbour.write_bytes(sentinel.read_bytes())
    atime_works = atime_is_recorded(sentinel.parent)
    past = time.time() - 86400 * 10
    os.utime(sentinel, (past, sentinel.stat().st_mtime))
    started = time.monotonic()

    answer = await client.post(
        PROBE, json={"source_uri": init["source_uri"]}, headers=bearer(token)
    )

    assert time.monotonic() - started < 5
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == PROBE_EXPECTED[case]
    assert str(data_dir) not in answer.text  # no server path in the answer
    if atime_works:
        assert sentinel.stat().st_atime == pytest.approx(past, abs=1), "the sentinel was read"
    # The service carries on.
    good = await ingest_file(client, token, h264_aac_mp4)
    assert good["status"] == "committed"
    assert_no_process_left()
    logged = "".join(capfd.readouterr())
    assert_secret_kept([answer.text], data_dir, caplog, logged, *[p for p in [neighbour] if p])


@pytest.mark.parametrize(
    "settings_overrides", [{"prober": "pyav"}, {"prober": "ffprobe"}], indirect=True, ids=str
)
@pytest.mark.parametrize("kind", SPECIAL)
async def test_a_fifo_or_endless_file_in_storage_is_refused_at_once(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    data_dir: Path,
    kind: str,
) -> None:
    token = make_token()
    init = await init_upload(client, token, h264_aac_mp4)
    assert (await put_upload(client, init, h264_aac_mp4.read_bytes())).status_code == 200
    _make_special(kind, stored(data_dir, init["upload_id"]))
    started = time.monotonic()

    answer = await client.post(
        PROBE, json={"source_uri": init["source_uri"]}, headers=bearer(token)
    )

    # Well under the probe timeout (30 s): refused up front, not waited out. Loose enough for
    # a loaded CI machine.
    assert time.monotonic() - started < 5
    # Storage never hands out a FIFO (it is no object); the terabyte is no media FFmpeg knows.
    expected = (404, "source_not_found") if kind == "fifo" else (422, "invalid_media")
    assert (answer.status_code, answer.json()["code"]) == expected, answer.text
    assert_no_process_left()


async def test_a_name_that_looks_like_options_is_only_a_name(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    h264_aac_mp4: Path,
    tmp_path: Path,
) -> None:
    token = make_token()
    named = tmp_path / "-i http:x .mp4"
    named.write_bytes(h264_aac_mp4.read_bytes())
    asset = await ingest_file(client, token, named)
    answer = await client.post(PROBE, json={"asset_id": asset["asset_id"]}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert [s["codec"] for s in answer.json()["streams"]] == ["h264", "aac"]
    job = await sidecar_job(client, token, asset["asset_id"])
    assert job["status"] == "succeeded", job


# -- the sidecar job -----------------------------------------------------------------------------
JOB_EXPECTED = {
    "hls_playlist": "invalid_media",
    "concat_list": "invalid_media",
    "frame_100000x100000": "invalid_media",
    "frame_16000x16000": "media_too_large",
    "zero_bytes": "invalid_media",
    "truncated_half": "invalid_media",
    "text": "invalid_media",
    "thousand_streams": "invalid_media",
    "endless": "thumbnail_timeout",
}


# Every case on the default PyAV thumbnailer (the decode pool); on the ffmpeg thumbnailer, the
# ones where a subprocess has something of its own to get right (killing, max_pixels, baits).
JOB_CASES = [
    *((case, "pyav") for case in sorted(JOB_EXPECTED)),
    *((case, "ffmpeg") for case in ("concat_list", "endless", "frame_16000x16000", "hls_playlist")),
]


@pytest.mark.parametrize(
    ("case", "settings_overrides"),
    [(case, {"thumbnailer": thumbnailer}) for case, thumbnailer in JOB_CASES],
    indirect=["settings_overrides"],
    ids=[f"{case}-{thumbnailer}" for case, thumbnailer in JOB_CASES],
)
async def test_a_sidecar_job_fails_with_its_code_and_the_next_one_succeeds(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    hostile: dict[str, Hostile],
    small_h264: Path,
    sentinel: Path,
    h264_aac_mp4: Path,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    case: str,
) -> None:
    token = make_token()
    decoy = small_h264 if case == "endless" else hostile[case].decoy
    asset = await ingest_file(client, token, decoy)
    target = stored(data_dir, asset["upload_id"])
    neighbour = None
    if case == "endless":
        _make_special(case, target)
    else:
        target.write_bytes(hostile[case].path.read_bytes())
    if case == "concat_list":
        neighbour = target.parent / sentinel.name
        neighbour.write_bytes(sentinel.read_bytes())
    started = time.monotonic()

    job = await sidecar_job(client, token, asset["asset_id"])

    elapsed = time.monotonic() - started
    assert job["status"] == "failed", job
    assert job["error"]["code"] == JOB_EXPECTED[case], job
    assert job["attempts"] == 1  # a file's fault: no retry
    # The endless file is killed at the thumbnail timeout; the rest fail as soon as they are
    # read. Margins for a loaded CI machine.
    assert elapsed < (TIMEOUT + 6 if case == "endless" else 5)
    asset_now = await client.get(f"/v1/assets/{asset['asset_id']}", headers=bearer(token))
    assert asset_now.json()["status"] == "failed"
    assert_no_process_left()
    # The worker still serves: a good file's sidecar is made right after.
    good = await ingest_file(client, token, h264_aac_mp4)
    assert (await sidecar_job(client, token, good["asset_id"]))["status"] == "succeeded"
    logged = "".join(capfd.readouterr())
    skip = [p for p in [neighbour] if p]
    assert_secret_kept([str(job), asset_now.text], data_dir, caplog, logged, *skip)


@pytest.mark.parametrize("settings_overrides", [{"job_max_attempts": 3}], indirect=True)
async def test_a_fifo_in_storage_fails_the_job_after_bounded_attempts(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, h264_aac_mp4: Path, data_dir: Path
) -> None:
    token = make_token()
    asset = await ingest_file(client, token, h264_aac_mp4)
    target = stored(data_dir, asset["upload_id"])
    _make_special("fifo", target)
    try:
        job = await sidecar_job(client, token, asset["asset_id"])
    finally:
        target.unlink()
    # A FIFO is no object to storage: missing, which may be transient — retried, but bounded.
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "source_not_found"
    assert job["attempts"] == job["max_attempts"] == 3
    assert_no_process_left()
    good = await ingest_file(client, token, h264_aac_mp4)
    assert (await sidecar_job(client, token, good["asset_id"]))["status"] == "succeeded"


# -- the controls: each bait and bomb is live without the defences -------------------------------
def test_without_the_allow_list_ffprobe_would_read_the_sentinel_through_the_list(
    hostile: dict[str, Hostile],
) -> None:
    listing = hostile["concat_list"].path
    command = [require_binary("ffprobe"), "-v", "quiet", "-protocol_whitelist", "file,pipe"]
    result = subprocess.run(
        [*command, "-show_streams", "-of", "json", f"file:{listing}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert SECRET in result.stdout
