"""``heimdex ingest``'s composition: its local files and the Heimdex it talks to — over HTTP
(without importing the service: no database, queue or web stack), or the embedded one built by
:mod:`heimdex.bootstrap` in this process."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heimdex.application.bulk_ingest import IngestTarget, SourceFiles


def local_files() -> SourceFiles:
    from heimdex.adapters.source_files import LocalSourceFiles

    return LocalSourceFiles()


def _import_httpx_without_its_command_line() -> None:
    """``import httpx`` imports httpx's own command line too (``httpx._main``: rich, pygments and
    click), when those happen to be installed — a third of ``heimdex ingest --api``'s start-up,
    for a program it never runs. A ``None`` in ``sys.modules`` makes that one import fail, which
    httpx allows for (its ``httpx.main`` then says the command line's dependencies are missing);
    the entry goes again afterwards, so nothing else is blocked."""
    if "httpx" in sys.modules:
        return
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        blocked: object = sys.modules.get("httpx._main", sys)
        if blocked is None:
            del sys.modules["httpx._main"]


@asynccontextmanager
async def http_target(api_url: str, token: str, *, connections: int) -> AsyncIterator[IngestTarget]:
    """A Heimdex at ``api_url`` as the organisation of ``token``."""
    _import_httpx_without_its_command_line()
    from heimdex.adapters.heimdex_http import HttpIngestTarget

    async with HttpIngestTarget(api_url, token, connections=connections) as target:
        yield target


@asynccontextmanager
async def in_process_target(org_id: str, *, run_jobs: bool) -> AsyncIterator[IngestTarget]:
    """This machine's Heimdex (``HEIMDEX_*``; by default the embedded one on ./data), in this
    process, as ``org_id``. ``run_jobs``: run the sidecar jobs here; otherwise they stay queued
    for ``heimdex serve`` on the same data, whose sweep hands them over."""
    from contextlib import nullcontext

    from heimdex.adapters.heimdex_inprocess import InProcessIngestTarget
    from heimdex.application.sweeping import sweeping
    from heimdex.bootstrap import build
    from heimdex.logs import configure_logging
    from heimdex.settings import load_settings

    settings = load_settings()
    # The service's own lines (upload received, asset committed…) would drown the per-file
    # lines; without jobs here, the "enqueue deferred" warning is expected, so errors only.
    configure_logging("warning" if run_jobs else "error", settings.log.format)
    services = build(settings)
    await services.startup(start_queue=run_jobs)
    # Running the jobs here means running their sweep too (see ``sweeping``).
    interval = settings.jobs.sweep_interval_seconds
    try:
        async with sweeping(interval, services.job_runner.sweep) if run_jobs else nullcontext():
            yield InProcessIngestTarget(
                org_id,
                ingest=services.ingest,
                resumable=services.resumable,
                assets=services.assets,
                jobs=services.jobs,
            )
    finally:
        await services.aclose()
