"""The ``heimdex`` command line: serve, probe, token, db.

User mistakes print one line (``heimdex: …``) and exit non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from heimdex import __version__
from heimdex.domain.errors import HeimdexError
from heimdex.domain.media import MediaInfo, StreamInfo
from heimdex.settings import Settings, SettingsError, load_settings, unknown_variables

EXIT_FAILURE = 1
EXIT_USAGE = 2
_MAX_PORT = 65535


class CliError(Exception):
    """A mistake the user can fix; printed as one line."""


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


# -- serve -------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from heimdex.entrypoints.http.app import create_app
    from heimdex.entrypoints.http.server import ConnectionLimits, serve
    from heimdex.logs import configure_logging, get_logger
    from heimdex.settings import read_environment

    settings = _settings()
    configure_logging(settings.log.level, settings.log.format)
    log = get_logger("heimdex.serve")
    for name in unknown_variables(read_environment()):
        log.warning("unknown_setting", variable=name, hint="not a Heimdex setting; a typo?")
    host = args.host or settings.http.host
    port = args.port or settings.http.port
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
    )
    _preflight(settings)
    serve(
        create_app(settings=settings, warm_decoders=True),
        host=host,
        port=port,
        limits=ConnectionLimits(
            max_header_bytes=settings.http.max_header_bytes,
            header_timeout_seconds=settings.http.header_timeout_seconds,
            keep_alive_seconds=settings.http.keep_alive_seconds,
            max_connections=settings.http.max_connections,
        ),
    )
    return 0


def _preflight(settings: Settings) -> None:
    """Start-up's refusals (unsafe tenancy, a Redis that would evict jobs, no database) as one
    line, before uvicorn or taskiq would turn them into a traceback."""
    from heimdex.bootstrap import preflight

    asyncio.run(preflight(settings))


# -- probe -------------------------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    from heimdex.bootstrap import build_prober

    settings = _settings()
    prober = build_prober(settings)
    results: list[tuple[Path, MediaInfo | HeimdexError]] = []

    async def probe_all() -> None:
        for path in args.files:
            if not path.exists():
                results.append((path, HeimdexError(f"{path}: no such file")))
                continue
            try:
                results.append((path, await prober.probe(path)))
            except HeimdexError as exc:
                results.append((path, exc))

    asyncio.run(probe_all())
    failed = False
    for path, outcome in results:
        if isinstance(outcome, HeimdexError):
            failed = True
            print(f"heimdex: {path}: {outcome.code}: {outcome.message}", file=sys.stderr)
    successes = [(p, o) for p, o in results if isinstance(o, MediaInfo)]
    if args.json:
        if len(args.files) == 1 and successes:
            print(msgspec.json.encode(successes[0][1]).decode())
        elif len(args.files) > 1:
            listing = [{"file": str(p), "media": o} for p, o in successes]
            print(msgspec.json.encode(listing).decode())
    else:
        for path, media in successes:
            print(format_media(path, media))
    return EXIT_FAILURE if failed else 0


def format_media(path: Path, media: MediaInfo) -> str:
    """A readable summary of one file, a line per stream."""
    duration = f"{media.duration:.3f} s" if media.duration is not None else "duration unknown"
    rate = f"{media.bit_rate / 1000:.0f} kb/s" if media.bit_rate else "bit rate unknown"
    lines = [f"{path}", f"  {media.format_name}  {duration}  {rate}  {media.size_bytes:,} bytes"]
    lines += [f"  #{s.index} {s.kind:<9} {_describe_stream(s)}" for s in media.streams]
    lines += [
        f"  chapter {c.index}: {c.start:.3f}-{c.end:.3f} s {c.title or ''}".rstrip()
        for c in media.chapters
    ]
    return "\n".join(lines)


def _describe_stream(s: StreamInfo) -> str:
    parts = [s.codec or "unknown codec"]
    if s.profile:
        parts[0] += f" ({s.profile})"
    if s.width and s.height:
        parts.append(f"{s.width}x{s.height}")
        if s.rotation:
            parts.append(f"rotation {s.rotation} -> {s.display_width}x{s.display_height}")
    if s.frame_rate:
        parts.append(f"{s.frame_rate:g} fps")
    if s.pix_fmt:
        parts.append(s.pix_fmt)
    if s.hdr:
        parts.append("HDR")
    if s.channels:
        parts.append(f"{s.channels} ch" + (f" {s.channel_layout}" if s.channel_layout else ""))
    if s.sample_rate:
        parts.append(f"{s.sample_rate} Hz")
    if s.language:
        parts.append(f"[{s.language}]")
    return "  ".join(parts)


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
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    from heimdex.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    _preflight(settings)

    worker_args = WorkerArgs.from_cli(
        [
            "heimdex.entrypoints.worker:broker",
            "--workers",
            str(args.processes),
            "--max-async-tasks",
            str(args.concurrency),
            "--no-configure-logging",
        ]
    )
    return run_worker(worker_args) or 0


# -- db ----------------------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from heimdex.adapters.db.migrations import upgrade

    settings = _settings()
    upgrade(
        settings.resolved_migration_database_url,
        revision=args.revision,
        directory=settings.database.migrations_dir,
    )
    print(f"database upgraded to {args.revision}")
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heimdex",
        description="Heimdex turns raw video into structured, queryable metadata. Configuration "
        "comes from HEIMDEX_* environment variables and a .env file (see docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"heimdex {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API",
        description="Run the HTTP API. With no HEIMDEX_* variables set it uses the embedded "
        "default: SQLite and local storage under ./data, in-process jobs, the PyAV prober.",
    )
    serve.add_argument("--host", help="address to listen on (default: HEIMDEX_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: HEIMDEX_PORT, 8000)")
    serve.set_defaults(handler=cmd_serve)

    probe = commands.add_parser(
        "probe",
        help="describe media files",
        description="Describe media files with the configured prober (HEIMDEX_PROBER). "
        "Exits 1 if any file is not readable media.",
    )
    probe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    probe.add_argument(
        "--json",
        action="store_true",
        help="print the media description as JSON (one file: the object; several: a list of "
        '{"file", "media"})',
    )
    probe.set_defaults(handler=cmd_probe)

    token = commands.add_parser(
        "token",
        help="mint a development token",
        description="Mint a bearer token signed with HEIMDEX_JWT_SECRET, for development and "
        "tests. Production tokens come from your identity provider.",
    )
    token.add_argument("--org", required=True, help="organisation id (the org_id claim)")
    token.add_argument(
        "--scope", action="append", default=[], help="grant a scope, e.g. admin (repeatable)"
    )
    token.add_argument("--subject", help="the sub claim")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (3600)")
    token.set_defaults(handler=cmd_token)

    worker = commands.add_parser(
        "worker",
        help="run job workers (Redis backend)",
        description="Run taskiq worker processes that take sidecar jobs from Redis "
        "(HEIMDEX_JOB_QUEUE_BACKEND=redis, HEIMDEX_REDIS_URL). Each process also sweeps: it "
        "re-enqueues jobs that were never handed over, retries whose back-off ran out, and "
        "jobs whose worker died.",
    )
    worker.add_argument("--processes", type=int, default=1, help="worker processes (1)")
    worker.add_argument(
        "--concurrency", type=int, default=4, help="jobs run at once per process (4)"
    )
    worker.set_defaults(handler=cmd_worker)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser(
        "upgrade",
        help="apply migrations",
        description="Apply the Alembic migrations, connecting as HEIMDEX_MIGRATION_DATABASE_URL "
        "(the tables' owner) when set, else HEIMDEX_DATABASE_URL. `heimdex serve` migrates the "
        "embedded SQLite database by itself.",
    )
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"heimdex: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HeimdexError as exc:
        print(f"heimdex: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
