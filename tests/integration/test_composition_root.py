"""``Services.aclose`` releases, through one exit stack, every part ``build`` made."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import pytest

from heimdex.adapters.media.pyav import PyAVProber
from heimdex.adapters.media.pyav_thumbnailer import PyAVThumbnailer
from heimdex.bootstrap import build
from heimdex.domain.errors import QueueUnavailable
from heimdex.settings import Settings
from tests.fixtures.app import TEST_SECRET


async def test_aclose_stops_the_decode_processes_and_the_queue_it_started(
    data_dir: Path,
) -> None:
    settings = Settings.from_flat(
        data_dir=data_dir, jwt_secret=TEST_SECRET, probe_workers=1, decode_workers=1
    )
    services = build(settings)
    adapters = services.adapters
    prober, thumbnailer = adapters.prober, adapters.thumbnailer
    assert isinstance(prober, PyAVProber)
    assert isinstance(thumbnailer, PyAVThumbnailer)
    before = {child.pid for child in multiprocessing.active_children()}
    await services.startup()
    await services.warm_decoders(probing=True, thumbnails=True)
    assert (prober.pool.started, thumbnailer.pool.started) == (1, 1)
    decoders = {child.pid for child in multiprocessing.active_children()} - before
    assert len(decoders) == 2
    await adapters.queue.check()  # started

    await services.aclose()
    assert not decoders & {child.pid for child in multiprocessing.active_children()}
    with pytest.raises(QueueUnavailable):
        await adapters.queue.enqueue(uuid.uuid4())
    await services.aclose()  # nothing left to release: a second close does nothing
