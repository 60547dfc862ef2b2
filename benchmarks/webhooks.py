"""Webhook delivery on the embedded default (SQLite, deliveries in-process), to a receiver on
127.0.0.1 in the same process.

    uv run python benchmarks/webhooks.py [--runs 30] [--deliveries 600]

Two figures (issue 13):

- commit → ``asset.ready`` received: from the start of the commit of an uploaded clip, through
  its sidecar job, to the receiver holding the signed ``asset.ready``; p50 and p99.
- deliveries per second of one deliverer (claim under a lease, sign, POST, record the outcome),
  beside a bare ``httpx`` loop posting the same signed payloads to the same receiver in the
  same run, with the same number of requests in flight. Target: at least 0.5x the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from heimdex.application.ingest import UploadRequest
from heimdex.application.sweeping import sweep_forever
from heimdex.application.webhook_events import record_event
from heimdex.bootstrap import build
from heimdex.domain.model import Principal, ThumbnailSpec
from heimdex.domain.webhooks import WebhookEventType, signature_header
from heimdex.logs import configure_logging
from heimdex.settings import Settings

SECRET = "benchmark-secret-that-is-at-least-32-bytes"
ENDPOINTS = 8


class Receiver:
    """Counts requests per path and notes when each event type first arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.arrived: dict[str, float] = {}
        self.port = 0
        self.done = asyncio.Event()
        self.expected = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.count += 1
                if b'"asset.ready"' in body:
                    asset = body.split(b'"asset_id":"')[1][:36].decode()
                    self.arrived[asset] = time.perf_counter()
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                if self.expected and self.count >= self.expected:
                    self.done.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def make_clip(directory: Path) -> Path:
    clip = directory / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip),
        ],
        check=True,
    )  # fmt: skip
    return clip


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main(runs: int, deliveries: int) -> None:
    configure_logging("warning", "console")
    workdir = Path(tempfile.mkdtemp(prefix="heimdex-webhooks-bench-"))
    data = make_clip(workdir).read_bytes()
    receiver = Receiver()
    server = await receiver.start()
    services = build(
        Settings.from_flat(
            data_dir=workdir / "data",
            jwt_secret=SECRET,
            webhook_allow_private_networks=True,
            log_level="warning",
            webhook_concurrency=16,
            webhook_endpoint_concurrency=2,
            # One organisation here, so its cap is the process's: 16 in flight, as the bare loop.
            webhook_org_concurrency=16,
        )
    )
    await services.startup()
    await services.warm_decoders(probing=True, thumbnails=True)
    sweeper = asyncio.create_task(sweep_forever(1.0, *services.sweeps()))
    principal = Principal(org_id="bench")
    try:
        # -- commit → asset.ready ----------------------------------------------------------
        await services.webhooks.create(
            principal, f"http://127.0.0.1:{receiver.port}/ready", [WebhookEventType.ASSET_READY]
        )
        latencies = []
        for _ in range(runs):
            issued = await services.ingest.init_upload(
                principal,
                UploadRequest(
                    source_name="clip.mp4", content_length=len(data), content_type="video/mp4"
                ),
                "http://bench",
            )
            await services.ingest.receive_upload("bench", issued.upload.id, one_chunk(data))
            started = time.perf_counter()
            asset, _ = await services.ingest.commit_upload(principal, issued.upload.id)
            await services.jobs.request_sidecar(principal, asset.id, ThumbnailSpec(count=3))
            deadline = time.monotonic() + 60
            while str(asset.id) not in receiver.arrived:
                if time.monotonic() > deadline:
                    raise SystemExit("asset.ready never arrived")
                await asyncio.sleep(0.001)
            latencies.append(receiver.arrived[str(asset.id)] - started)
        print(
            f"commit -> asset.ready received ({runs} runs): "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms"
        )

        # -- deliveries per second -------------------------------------------------------------
        org = "bench-throughput"
        endpoints = []
        for index in range(ENDPOINTS):
            endpoint, _ = await services.webhooks.create(
                Principal(org_id=org),
                f"http://127.0.0.1:{receiver.port}/t/{index}",
                [WebhookEventType.ASSET_DELETED],
            )
            endpoints.append(endpoint)
        per_event = len(endpoints)
        events = deliveries // per_event
        receiver.count, receiver.expected = 0, events * per_event
        receiver.done.clear()
        # Written with the deliverer asleep (one transaction, then one wake-up).
        sweeper.cancel()
        uow = services.deliverer._uow
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        async with uow(org) as work:
            for _ in range(events):
                await record_event(
                    work, WebhookEventType.ASSET_DELETED, {"asset_id": str(uuid.uuid4())}, now
                )
            await work.commit()
        started = time.perf_counter()
        sweeper = asyncio.create_task(sweep_forever(1.0, services.deliverer.sweep))
        await asyncio.wait_for(receiver.done.wait(), 300)
        heimdex_rate = receiver.expected / (time.perf_counter() - started)

        # The bare loop: the same signed bodies, the same number in flight, one client.
        secrets = [e.signing_secrets(now) for e in endpoints]
        body = '{"type":"asset.deleted","timestamp":"2026-12-01T00:00:00Z","data":{}}'
        receiver.count = 0
        receiver.done.clear()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(receiver.expected):
            queue.put_nowait(index)

        async def bare(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                index = queue.get_nowait()
                endpoint = index % ENDPOINTS
                event_id = f"msg_{uuid.uuid4().hex}"
                stamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": event_id,
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": signature_header(secrets[endpoint], event_id, stamp, body),
                }
                url = f"http://127.0.0.1:{receiver.port}/t/{endpoint}"
                await client.post(url, content=body.encode(), headers=headers)

        started = time.perf_counter()
        async with httpx.AsyncClient(trust_env=False) as client:
            await asyncio.gather(*(bare(client) for _ in range(16)))
        bare_rate = receiver.expected / (time.perf_counter() - started)
        print(
            f"deliveries/s, one deliverer ({receiver.expected} deliveries, {ENDPOINTS} endpoints, "
            f"16 in flight): {heimdex_rate:.0f}; bare httpx loop: {bare_rate:.0f}; "
            f"ratio {heimdex_rate / bare_rate:.2f}x (target >= 0.5x)"
        )
    finally:
        sweeper.cancel()
        await services.aclose()
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--deliveries", type=int, default=600)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.runs, args.deliveries)))
