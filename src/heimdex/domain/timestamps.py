"""Date-times from outside (filters, cursors): always compared and stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from heimdex.domain.errors import TimestampOutOfRange


def as_utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC; one without a zone is read as UTC, the zone every timestamp here is in.

    The one place a date-time from a client is converted: an offset can carry a valid local
    time past year 1 or 9999 in UTC (``0001-01-01T00:00:00+01:00``), which Python cannot
    represent, so that is refused as ``TimestampOutOfRange`` rather than failing deeper down.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise TimestampOutOfRange(
            f"{name} is out of range once converted to UTC (years 1 to 9999)"
        ) from exc


def optional_utc(moment: datetime | None, name: str) -> datetime | None:
    """``as_utc`` for a filter that may be absent."""
    return None if moment is None else as_utc(moment, name)
