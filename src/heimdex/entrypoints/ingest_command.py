"""``heimdex ingest``: parse nothing, print everything. The work is
:class:`heimdex.application.bulk_ingest.BulkIngest`; this module builds it (over HTTP with
``--api``, else on this process's embedded Heimdex) and shows what it does."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from heimdex.application.bulk_ingest import (
    BulkIngest,
    Candidate,
    FileOutcome,
    FileStatus,
    IngestFailure,
    IngestOptions,
    IngestTarget,
    SourceFiles,
    exit_status,
    printable,
)
from heimdex.entrypoints.cli_progress import FileProgress, stderr_is_terminal

EXIT_INTERRUPTED = 130


@dataclass(frozen=True, kw_only=True)
class IngestArgs:
    paths: list[Path]
    recursive: bool
    api: str | None
    token: str | None
    org: str
    jobs: int
    sidecar: bool
    wait: bool
    as_json: bool


def ingest_command(args: IngestArgs) -> int:
    from heimdex.bootstrap_ingest import local_files

    files = local_files()
    candidates, known = files.discover(args.paths, recursive=args.recursive)
    outcomes: list[FileOutcome] = []
    total_bytes = sum(c.size for c in candidates if c.content_type is not None)
    progress = FileProgress(
        len(candidates), total_bytes=total_bytes, enabled=stderr_is_terminal() and not args.as_json
    )

    def report(outcome: FileOutcome) -> None:
        outcomes.append(outcome)
        if args.as_json:
            line = {
                "file": printable(outcome.file),
                "status": outcome.status.value,
                "asset_id": outcome.asset_id,
                "error": outcome.error,
            }
            print(msgspec.json.encode(line).decode(), flush=True)
        elif outcome.status is not FileStatus.SKIPPED:
            if progress.enabled and sys.stdout.isatty():  # the display's terminal, likely
                progress.print(_plain(outcome))
            else:  # a file or a pipe asked for the lines (the display stays on the terminal)
                print(_plain(outcome), flush=True)

    for problem in known:
        report(problem)
    interrupted = False
    with progress:
        try:
            asyncio.run(_run(args, files, candidates, progress, report))
        except KeyboardInterrupt:
            interrupted = True
        except IngestFailure as exc:  # the target could not even start
            print(f"heimdex: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    if not args.as_json:
        _summary(outcomes, interrupted=interrupted)
    if interrupted:
        return EXIT_INTERRUPTED
    return exit_status(outcomes)


async def _run(
    args: IngestArgs,
    files: SourceFiles,
    candidates: Sequence[Candidate],
    progress: FileProgress,
    report: Callable[[FileOutcome], None],
) -> None:
    async with _target(args) as target:
        use_case = BulkIngest(
            files, target, IngestOptions(jobs=args.jobs, sidecar=args.sidecar, wait=args.wait)
        )
        await use_case.run(candidates, progress, report)


def _target(args: IngestArgs) -> AbstractAsyncContextManager[IngestTarget]:
    from heimdex.bootstrap_ingest import http_target, in_process_target

    if args.api:
        return http_target(args.api, args.token or "", connections=max(2, args.jobs * 2))
    return in_process_target(args.org, run_jobs=args.wait)


def _plain(outcome: FileOutcome) -> str:
    file = printable(outcome.file)
    if outcome.status is FileStatus.FAILED:
        return f"failed     {file}: {outcome.error}: {outcome.message}"
    return f"{outcome.status.value:<10} {file} -> {outcome.asset_id}"


def _summary(outcomes: Sequence[FileOutcome], *, interrupted: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="heimdex ingest" + (" (interrupted)" if interrupted else ""))
    table.add_column("status")
    table.add_column("files", justify="right")
    table.add_column("bytes", justify="right")
    for status in FileStatus:
        chosen = [o for o in outcomes if o.status is status]
        table.add_row(status.value, str(len(chosen)), f"{sum(o.size_bytes for o in chosen):,}")
    Console(stderr=True).print(table)
