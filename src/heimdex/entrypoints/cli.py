"""The ``heimdex`` command line: serve, probe, ingest, token, worker, replay, db.

User mistakes print one line (``heimdex: …``) and exit non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from heimdex.domain.model import JobKind
from heimdex.entrypoints.console import (
    EXIT_FAILURE,
    CliError,
    ProbeArgs,
    cmd_probe,
    load_settings_or_fail,
    run_command,
)
from heimdex.entrypoints.replay_cli import (
    DEFAULT_LIMIT,
    DEFAULT_STUCK_SECONDS,
    ReplayTarget,
    cmd_replay,
)
from heimdex.settings import Settings, unknown_variables

_MAX_PORT = 65535


def _settings() -> Settings:
    return load_settings_or_fail()


# -- serve -------------------------------------------------------------------------------------
def _check_workers(settings: Settings, workers: int) -> None:
    """N server processes need what N processes can share (docs/deployment.md, "Workers")."""
    if workers < 1:
        raise CliError(f"--workers {workers}: at least 1")
    if workers == 1:
        return
    if settings.jobs.queue_backend != "redis":
        raise CliError(
            f"--workers {workers} needs HEIMDEX_JOB_QUEUE_BACKEND=redis (with `heimdex worker` "
            "running the jobs): with the in-process queue each process would run jobs and "
            "database sweeps of its own"
        )
    if not settings.resolved_database_url.startswith("postgresql"):
        raise CliError(
            f"--workers {workers} needs PostgreSQL (HEIMDEX_DATABASE_URL): the embedded SQLite "
            "serves one process, which migrates it at start-up"
        )


def cmd_serve(args: argparse.Namespace) -> int:
    from heimdex.entrypoints.http.app import create_app
    from heimdex.entrypoints.http.server import ConnectionLimits, serve, serve_workers
    from heimdex.logs import configure_logging, get_logger
    from heimdex.settings import read_environment

    settings = _settings()
    workers: int = args.workers
    _check_workers(settings, workers)
    configure_logging(settings.log.level, settings.log.format)
    log = get_logger("heimdex.serve")
    for name in unknown_variables(read_environment()):
        log.warning("unknown_setting", variable=name, hint="not a Heimdex setting; a typo?")
    host = args.host or settings.http.host
    port = args.port or settings.http.port
    from heimdex import __version__

    log.info(
        "starting",
        version=__version__,
        host=host,
        port=port,
        env=settings.env,
        database=settings.resolved_database_url.split("://", 1)[0],
        storage=settings.storage.backend,
        prober=settings.probe.backend,
        legacy=settings.enable_legacy,
        workers=workers,
    )
    _preflight(settings)
    limits = ConnectionLimits(
        max_header_bytes=settings.http.max_header_bytes,
        header_timeout_seconds=settings.http.header_timeout_seconds,
        keep_alive_seconds=settings.http.keep_alive_seconds,
        max_connections=settings.http.max_connections,
    )
    if workers == 1:
        serve(
            create_app(settings=settings, warm_decoders=True), host=host, port=port, limits=limits
        )
        return 0

    def run_worker(sock: socket.socket) -> None:
        # Built in the worker, after the fork: its own services, pools and decode processes.
        app = create_app(settings=settings, warm_decoders=True)
        serve(app, host=host, port=port, limits=limits, sockets=[sock])

    return serve_workers(run_worker, host=host, port=port, workers=workers)


def _preflight(settings: Settings) -> None:
    """Start-up's refusals (unsafe tenancy, a Redis that would evict jobs, no database) as one
    line, before uvicorn or taskiq would turn them into a traceback."""
    import asyncio

    from heimdex.bootstrap import preflight

    asyncio.run(preflight(settings))


# -- probe: heimdex.entrypoints.console.cmd_probe (a plain probe line never builds this app) ----


# -- ingest ------------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    from heimdex.domain.storage_keys import is_valid_org_id
    from heimdex.entrypoints.ingest_command import IngestArgs, ingest_command

    if args.api and not args.token:
        raise CliError("--api needs --token (or HEIMDEX_TOKEN)")
    if not args.api and not is_valid_org_id(args.org):
        raise CliError(f"--org {args.org!r}: use letters, digits, '.', '_' or '-'")
    return ingest_command(
        IngestArgs(
            paths=args.paths,
            recursive=args.recursive,
            api=args.api,
            token=args.token,
            org=args.org,
            jobs=args.jobs,
            sidecar=args.sidecar,
            wait=args.wait,
            as_json=args.json,
        )
    )


# -- token -------------------------------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    from heimdex.bootstrap import build_tokens
    from heimdex.domain.storage_keys import is_valid_org_id

    if not is_valid_org_id(args.org):
        raise CliError(
            f"--org {args.org!r}: use letters, digits, '.', '_' or '-' (at most 128 characters)"
        )
    if args.ttl <= 0:
        raise CliError("--ttl must be a positive number of seconds")
    settings = _settings()
    token = build_tokens(settings).mint(
        args.org, scopes=args.scope, subject=args.subject, ttl_seconds=args.ttl
    )
    print(token)
    return 0


# -- worker ------------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.jobs.queue_backend != "redis":
        raise CliError(
            "heimdex worker needs HEIMDEX_JOB_QUEUE_BACKEND=redis (with 'immediate', the API "
            "process runs the jobs itself)"
        )
    if args.processes < 1:
        raise CliError("--processes must be at least 1")
    last_port = settings.metrics.worker_port + args.processes - 1
    if settings.metrics.worker_port and last_port > _MAX_PORT:
        raise CliError(
            f"HEIMDEX_WORKER_METRICS_PORT={settings.metrics.worker_port} with --processes "
            f"{args.processes}: process N serves port + N, and {last_port} is past {_MAX_PORT}"
        )
    from heimdex.entrypoints.worker_runner import run_workers
    from heimdex.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    _preflight(settings)
    return run_workers(
        args.processes, args.concurrency, settings.jobs.worker_shutdown_grace_seconds
    )


# -- db ----------------------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from heimdex.bootstrap import migrate_database

    migrate_database(_settings(), args.revision)
    print(f"database upgraded to {args.revision}")
    return 0


# -- the command line ----------------------------------------------------------------------------
# typer (click underneath) parses; rich draws the help only when it is asked for. Each command
# builds the Namespace its cmd_* function takes, so a command's body stays a plain function.
import typer  # noqa: E402 - after the command bodies, which import their own needs lazily

_HELP = {"help_option_names": ["-h", "--help"]}


def _example(*lines: str) -> str:
    return "[bold]Example:[/bold]\n\n" + "\n\n".join(f"  $ {line}" for line in lines)


app = typer.Typer(
    name="heimdex",
    help="Heimdex turns raw video into structured, queryable metadata. Configuration comes "
    "from HEIMDEX_* environment variables and a .env file (see docs/configuration.md).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings=_HELP,
    epilog=_example(
        "heimdex serve",
        "heimdex ingest ~/Videos --recursive",
        "heimdex probe clip.mp4",
    ),
)
db_app = typer.Typer(
    help="Database maintenance.",
    no_args_is_help=True,
    context_settings=_HELP,
    epilog=_example("heimdex db upgrade"),
)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        from heimdex import __version__

        print(f"heimdex {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Heimdex turns raw video into structured, queryable metadata. Configuration comes from
    HEIMDEX_* environment variables and a .env file (see docs/configuration.md)."""


def _run(handler: Callable[[argparse.Namespace], int], **args: Any) -> None:
    """Run a command body; user mistakes and Heimdex errors become one line and an exit code."""
    raise typer.Exit(run_command(handler, argparse.Namespace(**args)))


@app.command(
    short_help="Run the HTTP API.",
    epilog=_example("heimdex serve", "heimdex serve --host 0.0.0.0 --port 8080"),
    context_settings=_HELP,
)
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to listen on (default: HEIMDEX_HOST, 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port to listen on (default: HEIMDEX_PORT, 8000)")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="server processes on the one port (more than 1 needs PostgreSQL and "
            "HEIMDEX_JOB_QUEUE_BACKEND=redis)"
        ),
    ] = 1,
) -> None:
    """Run the HTTP API. With no HEIMDEX_* variables set it uses the embedded default: SQLite
    and local storage under ./data, in-process jobs, the PyAV prober."""
    _run(cmd_serve, host=host, port=port, workers=workers)


@app.command(
    short_help="Describe media files.",
    epilog=_example("heimdex probe clip.mp4", "heimdex probe --json ~/Videos/*.mov"),
    context_settings=_HELP,
)
def probe(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", show_default=False)],
    json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='print JSON (one file: the description; several: a list of {"file", "media"})',
        ),
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="files probed at once (default: CPUs)")
    ] = os.cpu_count() or 1,
) -> None:
    """Describe media files with the configured prober (HEIMDEX_PROBER), in this process.
    Exits 1 if any file is not readable media."""
    raise typer.Exit(run_command(cmd_probe, ProbeArgs(files, json=json, jobs=jobs)))


@app.command(
    short_help="Turn files into assets.",
    epilog=_example(
        "heimdex ingest ~/Videos --recursive",
        "heimdex ingest clip.mp4 --api https://heimdex.example --token $TOKEN --wait",
        "heimdex ingest ./footage -r --jobs 8 --json > ingest.jsonl",
    ),
    context_settings=_HELP,
)
def ingest(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", show_default=False)],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="descend into folders' folders")
    ] = False,
    api: Annotated[
        str | None,
        typer.Option(
            envvar="HEIMDEX_API_URL",
            help="a Heimdex to talk to over HTTP (default: this machine's embedded one, ./data)",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="HEIMDEX_TOKEN", help="bearer token for --api")
    ] = None,
    org: Annotated[str, typer.Option(help="organisation to ingest into, without --api")] = "local",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="files at once")] = 4,
    sidecar: Annotated[
        bool, typer.Option("--sidecar/--no-sidecar", help="ask for each asset's sidecar")
    ] = True,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the sidecar jobs")] = False,
    json: Annotated[bool, typer.Option("--json", help="one JSON line per file")] = False,
) -> None:
    """Turn media files (or the media in folders) into assets with sidecars; a file the
    organisation already has (same sha256) is a duplicate, not a second asset. Exits 0 when
    every media file ended ingested or duplicate; Ctrl-C stops cleanly and a re-run resumes."""
    _run(
        cmd_ingest,
        paths=paths,
        recursive=recursive,
        api=api,
        token=token,
        org=org,
        jobs=jobs,
        sidecar=sidecar,
        wait=wait,
        json=json,
    )


@app.command(
    short_help="Mint a development token.",
    epilog=_example("heimdex token --org acme --scope admin --ttl 600"),
    context_settings=_HELP,
)
def token(
    org: Annotated[str, typer.Option(help="organisation id (the org_id claim)")],
    scope: Annotated[
        list[str] | None, typer.Option(help="grant a scope, e.g. admin (repeatable)")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="the sub claim")] = None,
    ttl: Annotated[int, typer.Option(help="seconds until expiry")] = 3600,
) -> None:
    """Mint a bearer token signed with HEIMDEX_JWT_SECRET, for development and tests.
    Production tokens come from your identity provider."""
    _run(cmd_token, org=org, scope=scope or [], subject=subject, ttl=ttl)


@app.command(
    short_help="Run job workers (Redis backend).",
    epilog=_example("HEIMDEX_JOB_QUEUE_BACKEND=redis heimdex worker --processes 2"),
    context_settings=_HELP,
)
def worker(
    processes: Annotated[int, typer.Option(help="worker processes")] = 1,
    concurrency: Annotated[int, typer.Option(help="jobs run at once per process")] = 4,
) -> None:
    """Run worker processes that take sidecar jobs from Redis
    (HEIMDEX_JOB_QUEUE_BACKEND=redis, HEIMDEX_REDIS_URL). Each process also sweeps: it
    re-enqueues jobs that were never handed over, retries whose back-off ran out, and jobs whose
    worker died. SIGTERM stops taking jobs at once and lets running ones finish for
    HEIMDEX_WORKER_SHUTDOWN_GRACE_SECONDS, then hands them back to the queue; a second signal
    hands them back at once."""
    _run(cmd_worker, processes=processes, concurrency=concurrency)


@app.command(
    short_help="Requeue failed or stuck jobs and failed webhook deliveries.",
    epilog=_example(
        "heimdex replay --org acme --error-code storage_error",
        "heimdex replay --what deliveries --since 2026-12-01 --yes",
    ),
    context_settings=_HELP,
)
def replay(
    org: Annotated[str | None, typer.Option(help="only this organisation")] = None,
    kind: Annotated[JobKind | None, typer.Option(help="only this job kind")] = None,
    error_code: Annotated[
        str | None, typer.Option(help="only jobs/deliveries that failed with this code")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only those last changed at or after (ISO 8601)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="only those last changed before (ISO 8601)")
    ] = None,
    what: Annotated[ReplayTarget, typer.Option(help="what to select")] = ReplayTarget.ALL,
    stuck_after: Annotated[
        float,
        typer.Option(help="seconds before a queued or running job counts as stuck"),
    ] = DEFAULT_STUCK_SECONDS,
    limit: Annotated[int, typer.Option(help="at most this many each")] = DEFAULT_LIMIT,
    yes: Annotated[bool, typer.Option("--yes", help="requeue (without: a dry run)")] = False,
) -> None:
    """Select failed jobs, jobs stuck for --stuck-after seconds (queued and untouched, or
    running under a lease that ran out) and failed webhook deliveries; print what would be
    requeued, and requeue only with --yes. Safe to run twice."""
    _run(
        cmd_replay,
        org=org,
        kind=kind.value if kind else None,
        error_code=error_code,
        since=since,
        until=until,
        what=what.value,
        stuck_after=stuck_after,
        limit=limit,
        yes=yes,
    )


@app.command(
    short_help="Fingerprint assets processed before search existed.",
    epilog=_example(
        "heimdex reindex", "heimdex reindex --org acme --jobs 4", "heimdex reindex --dry-run"
    ),
    context_settings=_HELP,
)
def reindex(
    org: Annotated[
        list[str] | None, typer.Option(help="only this organisation (repeatable)")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="assets at once")] = 2,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the assets to do, do nothing")
    ] = False,
) -> None:
    """Run the sidecar job again (with its last options) for every ready video asset without
    frame fingerprints, so `similar` and frame search find it; new assets are fingerprinted by
    their own sidecar job. Exits 0 when every one was fingerprinted; a re-run resumes."""
    from heimdex.entrypoints.reindex_cli import cmd_reindex

    _run(cmd_reindex, org=org or [], jobs=jobs, dry_run=dry_run)


@db_app.command(
    short_help="Apply migrations.",
    epilog=_example("heimdex db upgrade", "heimdex db upgrade 0004"),
    context_settings=_HELP,
)
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply the Alembic migrations, connecting as HEIMDEX_MIGRATION_DATABASE_URL (the tables'
    owner) when set, else HEIMDEX_DATABASE_URL. `heimdex serve` migrates the embedded SQLite
    database by itself."""
    _run(cmd_db_upgrade, revision=revision)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        app(args=list(argv) if argv is not None else None, prog_name="heimdex")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
