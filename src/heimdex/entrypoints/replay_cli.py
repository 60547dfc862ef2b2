"""``heimdex replay``: requeue failed or stuck jobs and failed webhook deliveries.

A dry run by default: it prints what it would requeue; ``--yes`` acts. Running it again requeues
nothing twice (see ``application/replay.py``). Kept apart from ``cli.py`` so the command moves
as one piece: ``cli.py`` declares its options, ``cmd_replay`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from heimdex.domain.model import JobKind
from heimdex.domain.replay import JobReplayFilter
from heimdex.domain.timestamps import as_utc
from heimdex.domain.webhooks import DeliveryFilter

DEFAULT_STUCK_SECONDS = 900.0
DEFAULT_LIMIT = 1000


class ReplayUsageError(Exception):
    """A bad option; printed as one line by the CLI."""


def _moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReplayUsageError(f"{name} {text!r}: use an ISO 8601 date or date-time") from exc
    return as_utc(moment, name)


class ReplayTarget(StrEnum):
    """What ``heimdex replay --what`` selects."""

    ALL = "all"
    JOBS = "jobs"
    DELIVERIES = "deliveries"


def cmd_replay(args: argparse.Namespace) -> int:
    from heimdex.entrypoints.console import CliError, load_settings_or_fail

    try:
        since, until = _moment("--since", args.since), _moment("--until", args.until)
    except ReplayUsageError as exc:
        raise CliError(str(exc)) from exc
    if args.limit < 1 or args.stuck_after <= 0:
        raise CliError("--limit and --stuck-after must be positive")
    settings = load_settings_or_fail()
    return asyncio.run(_replay(args, settings, since, until))


async def _replay(args: argparse.Namespace, settings: Any, since: Any, until: Any) -> int:
    from heimdex.bootstrap import build
    from heimdex.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    services = build(settings)
    try:
        # SQLite: migrated like the server does; PostgreSQL: the tenancy check.
        await services.startup(start_queue=False)
        now = datetime.now(UTC)
        jobs = (
            JobReplayFilter(
                stuck_before=now - timedelta(seconds=args.stuck_after),
                org_id=args.org,
                kind=JobKind(args.kind) if args.kind else None,
                error_code=args.error_code,
                since=since,
                until=until,
            )
            if args.what in ("all", "jobs")
            else None
        )
        deliveries = (
            DeliveryFilter(org_id=args.org, error_code=args.error_code, since=since, until=until)
            if args.what in ("all", "deliveries") and args.kind is None
            else None
        )
        plan = await services.replay.plan(jobs, deliveries, args.limit)
        verb = "requeue" if args.yes else "would requeue"
        for job_id, org_id in plan.jobs:
            print(f"{verb} job {job_id} (org {org_id})")
        for delivery_id, org_id in plan.deliveries:
            print(f"{verb} delivery {delivery_id} (org {org_id})")
        if not args.yes:
            print(
                f"dry run: {len(plan.jobs)} jobs and {len(plan.deliveries)} deliveries would be "
                "requeued; run again with --yes to requeue them"
            )
            return 0
        result = await services.replay.run(plan, args.stuck_after)
        print(
            f"requeued {result.jobs_requeued} jobs and {result.deliveries_requeued} deliveries"
            + (
                f"; {result.skipped} changed meanwhile and were left alone"
                if result.skipped
                else ""
            )
        )
        return 0
    finally:
        await services.aclose()
