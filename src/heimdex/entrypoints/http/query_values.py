"""Query-string values the routes read by hand, parsed one way everywhere."""

from __future__ import annotations

from datetime import datetime

import msgspec

from heimdex.domain import errors


def parse_timestamp(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 date-time, strictly: a bare number is not read as Unix seconds."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, datetime, strict=True)
    except msgspec.ValidationError as exc:
        raise errors.InvalidInput(f"{name} must be an RFC 3339 date-time") from exc
