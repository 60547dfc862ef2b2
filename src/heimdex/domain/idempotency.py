"""Idempotency keys (IETF idempotency-key draft, Stripe's semantics), as data."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

MAX_KEY_LENGTH = 255


class IdempotencyScope(msgspec.Struct, frozen=True, kw_only=True):
    """Keys are per organisation, method and route: the same key on two routes is two keys."""

    org_id: str
    method: str
    route: str
    key: str


class ClaimWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The times of a claim: when it is made, until when its lease holds (a crashed request's
    claim can be taken over after), and when the record is forgotten."""

    now: datetime
    lease_until: datetime
    expires_at: datetime


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The first answer, replayed byte for byte."""

    status: int
    headers: dict[str, str]
    body: bytes


class ClaimOutcome(enum.StrEnum):
    CLAIMED = "claimed"  # first time (or a crashed claim's lease ran out): run the request
    REPLAY = "replay"  # done before with the same body: answer what was answered
    IN_FLIGHT = "in_flight"  # the first is still running
    MISMATCH = "mismatch"  # the key was used with another body


class IdempotencyClaim(msgspec.Struct, frozen=True, kw_only=True):
    outcome: ClaimOutcome
    response: StoredResponse | None = None
