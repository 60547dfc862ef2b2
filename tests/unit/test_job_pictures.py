"""The sidecar job's storyboard and poster with in-memory fakes: stored and listed, a user's
poster made again at its time by a re-run, no pictures for audio, and a failure that fails the
job with its own code."""

from __future__ import annotations

import msgspec
import pytest

from heimdex.application.job_runner import JobRunner
from heimdex.domain.errors import InvalidMedia
from heimdex.domain.media import MediaInfo, StreamInfo
from heimdex.domain.model import (
    Asset,
    JobStatus,
    Pictures,
    Poster,
    Sprite,
    Storyboard,
    StoryboardSpec,
    StoryboardTile,
)
from heimdex.domain.sidecar import SidecarDocument
from heimdex.domain.storage_keys import sidecar_key
from tests.unit.test_jobs import ORG, SPEC, World

VIDEO = MediaInfo(
    format_name="mov,mp4",
    duration=2.0,
    bit_rate=None,
    size_bytes=3,
    streams=[StreamInfo(index=0, kind="video", codec="h264", width=320, height=180)],
)


class FakePictureMaker:
    """A storyboard of two tiles and a poster at the time asked for (1.0 s when automatic)."""

    name = "fake"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.asked: list[tuple[StoryboardSpec | None, float | None]] = []

    async def pictures(
        self,
        path: object,
        media: MediaInfo,
        storyboard: StoryboardSpec | None,
        poster_time: float | None,
    ) -> Pictures:
        self.asked.append((storyboard, poster_time))
        if self.error is not None:
            raise self.error
        board = None
        if storyboard is not None:
            tiles = [
                StoryboardTile(start=i, end=i + 1, time=i, sprite=0, x=160 * i, y=0, w=160, h=90)
                for i in range(2)
            ]
            board = Storyboard(
                interval=1.0,
                tile_width=160,
                tile_height=90,
                format=storyboard.format,
                tiles=tiles,
                sprites=[Sprite(index=0, width=320, height=90, data=b"sprite")],
            )
        time = 1.0 if poster_time is None else poster_time
        return Pictures(
            storyboard=board, poster=Poster(time=time, width=320, height=180, data=b"p")
        )

    async def check(self) -> None:
        return None


class PictureWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.pictures = FakePictureMaker()
        self.runner = JobRunner(
            self.database,
            self.runner._directory,
            self.queue,
            self.storage,
            self.thumbnailer,
            self.clock,
            self.runner._policy,
            prober_name="fake",
            metrics=self.metrics,
            pictures=self.pictures,
        )

    async def video(self) -> Asset:
        asset = await self.asset()
        async with self.database(asset.org_id) as uow:
            await uow.assets.save(msgspec.structs.replace(asset, media=VIDEO))
            await uow.commit()
        return msgspec.structs.replace(asset, media=VIDEO)

    async def document(self, asset: Asset) -> SidecarDocument:
        raw = b"".join(
            [c async for c in self.storage.read_chunks(sidecar_key(ORG.org_id, asset.id))]
        )
        return msgspec.json.decode(raw, type=SidecarDocument)


@pytest.fixture
def world() -> PictureWorld:
    return PictureWorld()


async def test_the_job_stores_and_lists_the_storyboard_and_the_poster(world: PictureWorld) -> None:
    asset = await world.video()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    document = await world.document(asset)
    assert document.storyboard is not None
    assert document.storyboard.sprites[0].key.endswith("/storyboard/sprite-00.jpg")
    assert world.storage.objects[document.storyboard.sprites[0].key] == b"sprite"
    assert document.poster is not None
    assert (document.poster.time, document.poster.chosen_by) == (1.0, "auto")
    assert world.storage.objects[document.poster.key] == b"p"


async def test_a_rerun_keeps_a_poster_a_user_chose(world: PictureWorld) -> None:
    asset = await world.video()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC, storyboard=None)
    await world.runner.run(job.id)
    document = await world.document(asset)
    assert document.storyboard is None
    assert document.poster is not None
    chosen = msgspec.structs.replace(document.poster, time=1.5, chosen_by="user")
    await world.storage.write_bytes(
        sidecar_key(ORG.org_id, asset.id),
        msgspec.json.encode(msgspec.structs.replace(document, poster=chosen)),
    )
    again, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC, force=True)
    await world.runner.run(again.id)
    assert world.pictures.asked[-1] == (StoryboardSpec(), 1.5)
    poster = (await world.document(asset)).poster
    assert poster is not None
    assert (poster.time, poster.chosen_by) == (1.5, "user")


async def test_audio_asks_for_no_pictures(world: PictureWorld) -> None:
    asset = await world.asset()
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    assert world.pictures.asked == []
    document = await world.document(asset)
    assert document.storyboard is None
    assert document.poster is None


async def test_a_picture_failure_fails_the_job_with_its_own_code(world: PictureWorld) -> None:
    asset = await world.video()
    world.pictures.error = InvalidMedia("clip.mp4: broken")
    job, _ = await world.jobs.request_sidecar(ORG, asset.id, SPEC)
    await world.runner.run(job.id)
    done = await world.jobs.get(ORG, job.id)
    assert done.status is JobStatus.FAILED  # permanent: no retry
    assert done.error is not None
    assert done.error.code == "invalid_media"
