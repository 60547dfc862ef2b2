"""POST /metadata: off by default; when on, a streamed multipart upload probed and removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from heimdex.settings import Settings


def files(path: Path, name: str | None = None) -> dict[str, Any]:
    return {"file": (name or path.name, path.read_bytes(), "application/octet-stream")}


def temp_files(settings: Settings) -> list[Path]:
    temp_dir = settings.data_dir / "tmp"
    return list(temp_dir.iterdir()) if temp_dir.exists() else []


async def test_disabled_by_default(client: AsyncTestClient[Litestar], h264_aac_mp4: Path) -> None:
    response = await client.post("/metadata", files=files(h264_aac_mp4))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


class TestEnabled:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"enable_legacy": True, "max_upload_size_bytes": 2_000_000}

    async def test_a_real_clip_answers_its_media_description(
        self, client: AsyncTestClient[Litestar], settings: Settings, h264_aac_mp4: Path
    ) -> None:
        response = await client.post("/metadata", files=files(h264_aac_mp4))
        assert response.status_code == 200, response.text
        media = response.json()
        assert media["size_bytes"] == h264_aac_mp4.stat().st_size
        assert [s["kind"] for s in media["streams"]] == ["video", "audio"]
        assert temp_files(settings) == []

    async def test_a_text_file_is_422_and_leaves_no_temp_file(
        self, client: AsyncTestClient[Litestar], settings: Settings, text_mp4: Path
    ) -> None:
        response = await client.post("/metadata", files=files(text_mp4))
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_media"
        assert temp_files(settings) == []

    async def test_a_file_over_the_limit_is_413(
        self, client: AsyncTestClient[Litestar], settings: Settings
    ) -> None:
        big = {"file": ("big.mp4", b"\0" * 2_100_000, "video/mp4")}
        response = await client.post("/metadata", files=big)
        assert response.status_code == 413
        assert response.json()["code"] == "upload_too_large"
        assert temp_files(settings) == []

    async def test_a_form_without_a_file_is_400(self, client: AsyncTestClient[Litestar]) -> None:
        response = await client.post("/metadata", data={"note": "no file"}, files={})
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_request"

    async def test_a_body_that_is_not_multipart_is_400(
        self, client: AsyncTestClient[Litestar]
    ) -> None:
        response = await client.post(
            "/metadata", content=b"raw", headers={"content-type": "video/mp4"}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_request"

    async def test_a_multipart_body_cut_short_is_400(
        self, client: AsyncTestClient[Litestar], settings: Settings
    ) -> None:
        response = await client.post(
            "/metadata",
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nabc',
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 400
        assert "closing boundary" in response.json()["detail"]
        assert temp_files(settings) == []
