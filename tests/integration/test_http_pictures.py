"""Storyboards and posters on the embedded default, through real HTTP handling: the pictures are
checked against frames decoded independently from the source file with PyAV."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import jsonschema
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.adapters.media.thumbnail_plan import BLACK_MEAN
from heimdex.schemas import sidecar_schema_v1
from tests.fixtures.app import TokenFactory, bearer, ingest_file, services_of, wait_for_job
from tests.fixtures.media import MediaFactory

SCHEMA = json.loads(sidecar_schema_v1())
_CUE = re.compile(
    r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n"
    r"(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)"
)


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "sweep_interval_seconds": 0.2}


@pytest.fixture(scope="session")
def moving_mp4(media_factory: MediaFactory) -> Path:
    """320x180, 12 s at 25 fps, a keyframe every 3 s (so some tiles decode forward): the
    testsrc2 pattern moves, so frames a second apart differ."""
    return media_factory(
        "pictures_moving.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=12"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
        *("-g", "75", "-keyint_min", "75", "-sc_threshold", "0"),
    )


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _gray(frame: Any, width: int, height: int) -> bytes:
    """A frame as ``width`` x ``height`` 8-bit grey, rows packed."""
    grey = frame.reformat(width=width, height=height, format="gray")
    plane = grey.planes[0]
    data = bytes(plane)
    return b"".join(
        data[row * plane.line_size : row * plane.line_size + width] for row in range(height)
    )


def _crop(picture: bytes, x: int, y: int, w: int, h: int) -> bytes:
    with av.open(io.BytesIO(picture), mode="r") as container:
        frame = next(container.decode(video=0))
    width, height = frame.width, frame.height
    full = _gray(frame, width, height)
    return b"".join(full[(y + row) * width + x : (y + row) * width + x + w] for row in range(h))


def _frame_at(path: Path, seconds: float, width: int, height: int) -> bytes:
    """The frame shown at ``seconds`` (the last one at or before it), decoded from the start."""
    shown = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > seconds + 1e-4:
                break
            shown = frame
        assert shown is not None
        return _gray(shown, width, height)


def _difference(a: bytes, b: bytes) -> float:
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def _mean(data: bytes) -> float:
    return sum(data) / len(data)


async def _sidecar(
    client: AsyncTestClient[Litestar], token: str, path: Path, body: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    asset = await ingest_file(client, token, path)
    url = f"/v1/assets/{asset['asset_id']}"
    accepted = await client.post(f"{url}/sidecar", json=body or {}, headers=bearer(token))
    assert accepted.status_code == 202, accepted.text
    job = await wait_for_job(client, token, accepted.headers["location"])
    assert job["status"] == "succeeded", job
    document = (await client.get(f"{url}/sidecar", headers=bearer(token))).json()
    jsonschema.validate(document, SCHEMA)
    return url, document


async def _fetch(client: AsyncTestClient[Litestar], url: str) -> bytes:
    """A signed URL, fetched with no token."""
    parts = urlsplit(url)
    answer = await client.get(f"{parts.path}?{parts.query}")
    assert answer.status_code == 200, answer.text
    return answer.content


async def test_storyboard_cues_cover_the_video_and_each_tile_is_its_frame(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, moving_mp4: Path
) -> None:
    token = make_token(org_a)
    url, document = await _sidecar(client, token, moving_mp4)
    board = document["storyboard"]
    assert board["interval"] == 1.0
    assert board["tile_width"] == 160
    assert board["tile_height"] == 90
    assert len(board["tiles"]) == 12
    assert board["sprites"][0]["key"].endswith("/storyboard/sprite-00.jpg")

    vtt = await client.get(f"{url}/storyboard.vtt", headers=bearer(token))
    assert vtt.status_code == 200
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n")
    cues = _CUE.findall(vtt.text)
    assert len(cues) == 12
    as_json = (await client.get(f"{url}/storyboard", headers=bearer(token))).json()
    assert len(as_json["cues"]) == 12

    sprites: dict[str, bytes] = {}
    expected_end = 0.0
    for cue, listed in zip(cues, as_json["cues"], strict=True):
        start, end = _seconds(*cue[0:4]), _seconds(*cue[4:8])
        assert start == pytest.approx(expected_end)
        assert end > start
        expected_end = end
        sprite_url, (x, y, w, h) = cue[8], map(int, cue[9:13])
        assert listed["url"] == f"{sprite_url}#xywh={x},{y},{w},{h}"
        assert (w, h) == (160, 90)
        if sprite_url not in sprites:
            sprites[sprite_url] = await _fetch(client, sprite_url)  # absolute, signed, no token
        assert sprite_url.startswith("http")
        tile = _crop(sprites[sprite_url], x, y, w, h)
        # The tile is the frame at its time (as the source decodes it), and no other tile's.
        own = _difference(tile, _frame_at(moving_mp4, listed["time"], w, h))
        assert own < 6, (listed, own)
        assert start - 2.0 - 1e-3 <= listed["time"] < end  # a keyframe at most 2 s before
    assert expected_end == pytest.approx(12.0)
    times = sorted({c["time"] for c in as_json["cues"]})
    assert len(times) >= 8  # keyframes every 3 s, forward decoding between
    first, other = as_json["cues"][0], as_json["cues"][-1]
    tile = _crop(next(iter(sprites.values())), 0, 0, 160, 90)
    assert _difference(tile, _frame_at(moving_mp4, other["time"], 160, 90)) > 2 * _difference(
        tile, _frame_at(moving_mp4, first["time"], 160, 90)
    )


async def test_storyboard_false_makes_none(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, moving_mp4: Path
) -> None:
    token = make_token(org_a)
    url, document = await _sidecar(client, token, moving_mp4, {"storyboard": False})
    assert document["storyboard"] is None
    assert document["poster"] is not None  # the poster does not depend on it
    for path in ("storyboard", "storyboard.vtt"):
        answer = await client.get(f"{url}/{path}", headers=bearer(token))
        assert answer.status_code == 404
        assert answer.json()["code"] == "no_storyboard"


async def test_storyboard_options_choose_width_and_format(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, moving_mp4: Path
) -> None:
    token = make_token(org_a)
    body = {"storyboard": {"width": 96, "format": "webp"}}
    url, document = await _sidecar(client, token, moving_mp4, body)
    board = document["storyboard"]
    assert (board["tile_width"], board["format"]) == (96, "webp")
    sprite = board["sprites"][0]
    assert (sprite["width"], sprite["height"]) == (960, 2 * board["tile_height"])
    view = (await client.get(f"{url}/storyboard", headers=bearer(token))).json()
    data = await _fetch(client, view["sprites"][0]["url"])
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    bad = await client.post(
        f"{url}/sidecar", json={"storyboard": {"width": 4000}}, headers=bearer(token)
    )
    assert bad.status_code == 400


async def test_the_automatic_poster_is_never_the_black_start(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    black_start_mp4: Path,
) -> None:
    token = make_token(org_a)
    url, document = await _sidecar(client, token, black_start_mp4)
    assert document["poster"]["chosen_by"] == "auto"
    poster = (await client.get(f"{url}/poster", headers=bearer(token))).json()
    assert poster["chosen_by"] == "auto"
    assert poster["time"] >= 2.0  # the first 2 s are black
    assert (poster["width"], poster["height"]) == (320, 240)  # display size, under 1280
    image = await _fetch(client, poster["url"])
    assert image[:3] == b"\xff\xd8\xff"
    assert _mean(_crop(image, 0, 0, 320, 240)) > BLACK_MEAN


async def test_a_chosen_poster_is_the_frame_at_that_time_and_outlives_a_rerun(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, moving_mp4: Path
) -> None:
    token = make_token(org_a)
    url, _ = await _sidecar(client, token, moving_mp4)
    headers = {**bearer(token), "Idempotency-Key": "poster-41"}
    chosen = await client.put(f"{url}/poster", json={"time": 4.3}, headers=headers)
    assert chosen.status_code == 200, chosen.text
    poster = chosen.json()
    assert poster["chosen_by"] == "user"
    assert poster["time"] == 4.3
    assert (poster["width"], poster["height"]) == (320, 180)
    image = _crop(await _fetch(client, poster["url"]), 0, 0, 320, 180)
    exact = _difference(image, _frame_at(moving_mp4, 4.3, 320, 180))
    assert exact < 4
    # Not a keyframe's picture: the keyframes are at 3 and 6 s.
    assert _difference(image, _frame_at(moving_mp4, 3.0, 320, 180)) > 2 * exact
    replayed = await client.put(f"{url}/poster", json={"time": 4.3}, headers=headers)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert replayed.json() == poster

    forced = await client.post(f"{url}/sidecar", json={"force": True}, headers=bearer(token))
    await wait_for_job(client, token, forced.headers["location"])
    again = (await client.get(f"{url}/poster", headers=bearer(token))).json()
    assert (again["chosen_by"], again["time"]) == ("user", 4.3)
    document = (await client.get(f"{url}/sidecar", headers=bearer(token))).json()
    assert document["poster"]["chosen_by"] == "user"


async def test_choosing_a_poster_refuses_what_cannot_be(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    moving_mp4: Path,
    audio_m4a: Path,
) -> None:
    token = make_token(org_a)
    url, _ = await _sidecar(client, token, moving_mp4)
    for time in (-0.5, 12.5, 1e300):
        answer = await client.put(f"{url}/poster", json={"time": time}, headers=bearer(token))
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "time_out_of_range"
    other = await client.put(f"{url}/poster", json={"time": 1}, headers=bearer(make_token(org_b)))
    assert other.status_code == 404
    assert (await client.get(f"{url}/poster", headers=bearer(make_token(org_b)))).status_code == 404

    audio = await ingest_file(client, token, audio_m4a, "audio/mp4")
    audio_url = f"/v1/assets/{audio['asset_id']}"
    answer = await client.put(f"{audio_url}/poster", json={"time": 1}, headers=bearer(token))
    assert answer.status_code == 409
    assert answer.json()["code"] == "no_video"
    assert (await client.get(f"{audio_url}/poster", headers=bearer(token))).status_code == 409


async def test_deleting_the_asset_deletes_its_storyboard_and_poster(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, moving_mp4: Path
) -> None:
    token = make_token(org_a)
    url, _ = await _sidecar(client, token, moving_mp4)
    poster = (await client.get(f"{url}/poster", headers=bearer(token))).json()["url"]
    sprite = (await client.get(f"{url}/storyboard", headers=bearer(token))).json()
    sprite_url = sprite["sprites"][0]["url"]
    storage = services_of(client.app).adapters.storage
    keys = [urlsplit(u).path.removeprefix("/v1/files/") for u in (poster, sprite_url)]
    assert all([await storage.stat(key) for key in keys])
    assert (await client.delete(url, headers=bearer(token))).status_code == 204
    for signed, key in zip((poster, sprite_url), keys, strict=True):
        parts = urlsplit(signed)
        assert (await client.get(f"{parts.path}?{parts.query}")).status_code == 404
        assert await storage.stat(key) is None
