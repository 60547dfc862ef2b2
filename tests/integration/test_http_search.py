"""Search by what frames look like, through real HTTP handling, on SQLite and PostgreSQL: a
re-encoded, rescaled copy finds its original and an unrelated clip does not; a frame, by asset
and time or as an image, finds its scene; bad images get their typed 4xx."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import av
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image

from tests.fixtures.app import TokenFactory, bearer, ingest_file, wait_for_job
from tests.fixtures.media import MediaFactory

_SCENE = "mandelbrot=size=320x180:rate=25"


@pytest.fixture
def settings_overrides(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "sweep_interval_seconds": 0.2}


@pytest.fixture(scope="session")
def original_mp4(media_factory: MediaFactory) -> Path:
    """8 s of a zoom into the Mandelbrot set: every second looks different."""
    return media_factory(
        "search_original.mp4",
        *("-f", "lavfi", "-i", f"{_SCENE}:end_scale=0.001", "-t", "8"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )


@pytest.fixture(scope="session")
def copy_mp4(media_factory: MediaFactory, original_mp4: Path) -> Path:
    """The original re-encoded: smaller, another frame rate, a low quality, another codec."""
    return media_factory(
        "search_copy.mp4",
        *("-i", str(original_mp4), "-vf", "scale=192:108", "-r", "24"),
        *("-c:v", "mpeg4", "-q:v", "12"),
    )


@pytest.fixture(scope="session")
def unrelated_mp4(media_factory: MediaFactory) -> Path:
    return media_factory(
        "search_unrelated.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=8"),
        *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
    )


async def _processed(client: AsyncTestClient[Litestar], token: str, path: Path) -> str:
    asset = await ingest_file(client, token, path)
    url = f"/v1/assets/{asset['asset_id']}/sidecar"
    accepted = await client.post(url, json={}, headers=bearer(token))
    assert accepted.status_code == 202, accepted.text
    job = await wait_for_job(client, token, accepted.headers["location"])
    assert job["status"] == "succeeded", job
    return str(asset["asset_id"])


def frame_png(path: Path, seconds: float, width: int) -> bytes:
    """The frame shown at ``seconds``, rescaled to ``width``, as PNG (decoded here, by PyAV)."""
    with av.open(str(path)) as container:
        shown = None
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time > seconds + 1e-4:
                break
            shown = frame
    assert shown is not None
    image = shown.to_image()  # type: ignore[no-untyped-call]
    image = image.resize((width, width * image.height // image.width))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _animated_png() -> bytes:
    frames = [Image.new("L", (32, 32), value) for value in (0, 255)]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    return out.getvalue()


async def test_a_copy_finds_its_original_and_a_frame_finds_its_scene(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    org_b: str,
    original_mp4: Path,
    copy_mp4: Path,
    unrelated_mp4: Path,
) -> None:
    token = make_token(org_a)
    original = await _processed(client, token, original_mp4)
    copy = await _processed(client, token, copy_mp4)
    unrelated = await _processed(client, token, unrelated_mp4)
    # Another organisation holds the very same original: it must never appear.
    foreign = await _processed(client, make_token(org_b), original_mp4)

    answer = await client.get(f"/v1/assets/{copy}/similar", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    similar = answer.json()
    assert similar["asset_id"] == copy
    assert similar["frames"] >= 5
    found = {item["asset_id"]: item for item in similar["items"]}
    assert set(found) == {original}  # not the unrelated clip, not the other organisation's
    best = found[original]
    assert best["frames_matched"] >= similar["frames"] // 2
    assert best["matches"]
    assert all(abs(m["time"] - m["other_time"]) < 0.5 for m in best["matches"])

    # A frame of the copy, by asset and time: its scene in the original, at the same time.
    answer = await client.post(
        "/v1/search/frames", json={"asset_id": copy, "time": 4.0}, headers=bearer(token)
    )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert items
    assert items[0]["asset_id"] == original
    assert abs(items[0]["time"] - 4.0) < 1.0
    assert [i["distance"] for i in items] == sorted(i["distance"] for i in items)
    assert {i["asset_id"] for i in items} <= {original, copy}
    assert items[0]["thumbnail_url"]
    assert "signature=" in items[0]["thumbnail_url"]

    # A frame of the original the job fingerprinted (its fifth thumbnail's), decoded
    # independently and rescaled, as an image: its scene in the original is found.
    shown = (await client.get(f"/v1/assets/{original}/thumbnails", headers=bearer(token))).json()
    moment = shown["items"][4]["time"]
    image = frame_png(original_mp4, moment, 200)
    answer = await client.post(
        "/v1/search/frames",
        content=image,
        headers={**bearer(token), "Content-Type": "image/png"},
    )
    assert answer.status_code == 200, answer.text
    near = [i for i in answer.json()["items"] if abs(i["time"] - moment) < 1.0]
    assert original in {i["asset_id"] for i in near}
    assert unrelated not in {i["asset_id"] for i in answer.json()["items"]}
    assert foreign not in {i["asset_id"] for i in answer.json()["items"]}

    # The other organisation's asset is not found, whichever way it is asked for.
    assert (
        await client.get(f"/v1/assets/{foreign}/similar", headers=bearer(token))
    ).status_code == 404
    answer = await client.post(
        "/v1/search/frames", json={"asset_id": foreign, "time": 1.0}, headers=bearer(token)
    )
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"

    # A time outside the video.
    answer = await client.post(
        "/v1/search/frames", json={"asset_id": copy, "time": 60.0}, headers=bearer(token)
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "time_out_of_range"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"", "image/png", 422, "invalid_image"),
        (b"this is not an image, only text", "image/jpeg", 422, "invalid_image"),
        (_bomb_png(20000, 20000), "image/png", 413, "image_too_large"),
        (_animated_png(), "image/png", 422, "animated_image"),
        (b"GIF89a", "image/gif", 415, "unsupported_media_type"),
        (b"\xff" * ((5 << 20) + 1), "image/jpeg", 413, "request_too_large"),
        (b'{"text": "a red car"}', "application/json", 501, "semantic_search_unavailable"),
        (b'{"asset_id": "5f0e3c52-8a8e-4d4b-9c1e-2f6a0d9b7e41"}', "application/json", 400, None),
    ],
    ids=["empty", "text", "bomb", "animated", "gif", "oversize", "by-text", "no-time"],
)
async def test_a_bad_query_gets_its_typed_problem(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    org_a: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str | None,
) -> None:
    answer = await client.post(
        "/v1/search/frames",
        content=body,
        headers={**bearer(make_token(org_a)), "Content-Type": content_type},
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    if code is not None:
        assert answer.json()["code"] == code


async def test_an_asset_without_fingerprints_says_so(
    client: AsyncTestClient[Litestar], make_token: TokenFactory, org_a: str, unrelated_mp4: Path
) -> None:
    token = make_token(org_a)
    asset = await ingest_file(client, token, unrelated_mp4)  # no sidecar job yet
    answer = await client.get(f"/v1/assets/{asset['asset_id']}/similar", headers=bearer(token))
    assert answer.status_code == 409
    assert answer.json()["code"] == "frames_not_ready"
    answer = await client.get(
        f"/v1/assets/{asset['asset_id']}/similar?max_distance=8", headers=bearer(token)
    )
    assert answer.status_code == 400
