"""One organisation's search images hold at most its share of the search images' decode pool:
past the cap its next image is refused (429 ``search_busy``), another organisation's goes on."""

from __future__ import annotations

import asyncio

import pytest

from heimdex.application.probe_gate import ProbeSlots
from heimdex.application.search import SearchService
from heimdex.domain.errors import SearchImagesBusy
from heimdex.domain.model import Principal
from tests.unit.fakes import FakeClock, FakeDatabase, FakeStorage


class HeldFingerprinter:
    """Answers once ``release`` is set; ``started[n]`` is set when n decodes are under way."""

    name = "held"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.started = [asyncio.Event() for _ in range(4)]

    async def fingerprint(self, data: bytes) -> int:
        self.running += 1
        self.started[self.running].set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return 0x0123456789ABCDEF


def search_service(fingerprinter: HeldFingerprinter) -> SearchService:
    return SearchService(
        FakeDatabase(),
        fingerprinter,
        FakeStorage(),
        FakeClock(),
        300,
        image_slots=ProbeSlots(per_org=1, wait_seconds=0.05, refusal=SearchImagesBusy),
    )


async def search(service: SearchService, org: str) -> int:
    hits = await service.frames_like_image(
        Principal(org_id=org), b"image", max_distance=6, limit=5, base_url="http://api"
    )
    return len(hits.items)


async def test_an_organisation_past_its_share_is_refused_and_another_goes_on() -> None:
    fingerprinter = HeldFingerprinter()
    service = search_service(fingerprinter)
    greedy = asyncio.create_task(search(service, "greedy"))
    await asyncio.wait_for(fingerprinter.started[1].wait(), 5)
    with pytest.raises(SearchImagesBusy) as refused:
        await search(service, "greedy")
    assert refused.value.code == "search_busy"
    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 1
    assert "image search" in refused.value.message
    other = asyncio.create_task(search(service, "other"))
    # The other organisation's decode starts beside the greedy one's.
    await asyncio.wait_for(fingerprinter.started[2].wait(), 5)
    fingerprinter.release.set()
    assert await greedy == 0
    assert await other == 0
