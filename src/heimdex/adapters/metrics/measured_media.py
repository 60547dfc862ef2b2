"""Decorators that time the media ports: every probe and every thumbnail run reports its duration
and outcome to ``Metrics``, whichever use case asked (ingest commit, the probe endpoint, legacy
uploads, sidecar jobs), without any of them measuring anything themselves."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from heimdex.domain.errors import HeimdexError
from heimdex.domain.media import MediaInfo
from heimdex.domain.model import Thumbnail, ThumbnailSpec
from heimdex.domain.ports import Metrics, Prober, Thumbnailer

OK = "ok"


def outcome_of(exc: Exception) -> str:
    """A bounded label for a failure: the error's stable code, or ``error`` for anything else."""
    return exc.code if isinstance(exc, HeimdexError) else "error"


class MeasuredProber:
    """A ``Prober`` that times the one it wraps."""

    def __init__(self, inner: Prober, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.name = inner.name

    async def probe(self, path: Path) -> MediaInfo:
        started = time.perf_counter()
        try:
            media = await self._inner.probe(path)
        except Exception as exc:  # cancellation is no outcome of the probe's: not recorded
            self._metrics.probe_finished(self.name, outcome_of(exc), time.perf_counter() - started)
            raise
        self._metrics.probe_finished(self.name, OK, time.perf_counter() - started)
        return media

    async def check(self) -> None:
        await self._inner.check()


class MeasuredThumbnailer:
    """A ``Thumbnailer`` that times the one it wraps."""

    def __init__(self, inner: Thumbnailer, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.name = inner.name

    async def thumbnails(
        self, path: Path, media: MediaInfo, spec: ThumbnailSpec
    ) -> Sequence[Thumbnail]:
        started = time.perf_counter()
        try:
            made = await self._inner.thumbnails(path, media, spec)
        except Exception as exc:
            self._metrics.thumbnails_finished(
                self.name, outcome_of(exc), time.perf_counter() - started
            )
            raise
        self._metrics.thumbnails_finished(self.name, OK, time.perf_counter() - started)
        return made

    async def check(self) -> None:
        await self._inner.check()
