"""``heimdex reindex``: fingerprint the assets processed before frame fingerprints existed
(``application/reindex.py``), as sidecar jobs, with ``heimdex ingest``'s progress display.

On the embedded default the jobs run in this process (its in-process queue); with Redis they go
to the workers and this process waits for them. Stopped part-way, a second run does the rest.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def cmd_reindex(args: argparse.Namespace) -> int:
    from heimdex.domain.storage_keys import is_valid_org_id
    from heimdex.entrypoints.console import CliError, load_settings_or_fail

    for org in args.org or []:
        if not is_valid_org_id(org):
            raise CliError(f"--org {org!r}: use letters, digits, '.', '_' or '-'")
    if args.jobs < 1:
        raise CliError("--jobs must be positive")
    return asyncio.run(_reindex(args, load_settings_or_fail()))


async def _reindex(args: argparse.Namespace, settings: Any) -> int:
    from heimdex.application.sweeping import sweeping
    from heimdex.bootstrap import build
    from heimdex.entrypoints.cli_progress import FileProgress, stderr_is_terminal
    from heimdex.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    services = build(settings)
    try:
        # SQLite: migrated like the server does; PostgreSQL: the tenancy check. The in-process
        # queue runs the jobs here; a Redis queue hands them to the workers.
        await services.startup()
        reindexer = services.reindexer
        pending = await reindexer.pending(args.org or None)
        if args.dry_run:
            for org, asset_id in pending:
                print(f"{org}\t{asset_id}")
            print(f"{len(pending)} assets to fingerprint")
            return 0
        # The sweep, as the server and the workers run it: on the embedded default the jobs
        # run here, and a job left queued without a message would otherwise run nowhere.
        with FileProgress(len(pending), enabled=stderr_is_terminal()) as progress:
            async with sweeping(settings.jobs.sweep_interval_seconds, services.job_runner.sweep):
                summary = await reindexer.run(pending, progress, concurrency=args.jobs)
        print(
            f"{summary.fingerprinted} assets fingerprinted, {summary.failed} without "
            f"fingerprints, of {len(pending)}"
        )
        return 0 if summary.failed == 0 else 1
    finally:
        await services.aclose()
