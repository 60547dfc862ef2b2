"""Checking a URL Heimdex signed itself (the local backend's upload target, derived files): what
its query carries, its signature, then its expiry by the ``Clock``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from heimdex.domain.errors import HeimdexError
from heimdex.domain.ports import Clock, UrlSigner
from heimdex.domain.storage_keys import is_valid_org_id

# Epoch seconds fit in 12 digits for the next 30,000 years; int() of a much longer digit
# string raises ValueError (Python's 4,300-digit limit): a 500 instead of a 401.
_MAX_EXPIRES_DIGITS = 12


def is_epoch_seconds(value: str) -> bool:
    """Whether ``value`` is a plain decimal ``expires`` (ASCII digits only: ``"²"`` is a digit
    to ``str.isdigit`` and not to ``int``)."""
    return 0 < len(value) <= _MAX_EXPIRES_DIGITS and value.isascii() and value.isdigit()


@dataclass(frozen=True, slots=True)
class Refusals:
    """How a route refuses a URL: ``invalid`` when it is not signed or not by us, ``expired``
    when it was; the messages name the URL (``name``) and say what to do instead."""

    invalid: type[HeimdexError]
    expired: type[HeimdexError]
    name: str
    unsigned_hint: str
    expired_hint: str


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """A URL's verified query: whose it is, and how many seconds it stays valid."""

    org_id: str
    seconds_left: int


class SignedUrlVerifier:
    """Verifies the ``org``, ``expires`` and ``signature`` a signed URL carries: refuses, never
    crashes, on whatever a stranger puts there."""

    def __init__(self, signer: UrlSigner, clock: Clock) -> None:
        self._signer = signer
        self._clock = clock

    def verify(
        self, method: str, path: str, query: Mapping[str, str], refusals: Refusals
    ) -> SignedUrl:
        """The URL's organisation and remaining validity; ``refusals.invalid`` when the query
        is not signed or the signature is not ours for it, ``refusals.expired`` when it was
        and its time is up."""
        org_id, expires, signature = query.get("org"), query.get("expires"), query.get("signature")
        if not (org_id and expires and signature and is_valid_org_id(org_id)):
            raise refusals.invalid(f"{refusals.name} is not signed; {refusals.unsigned_hint}")
        if not is_epoch_seconds(expires):
            raise refusals.invalid(f"{refusals.name} is not signed; {refusals.unsigned_hint}")
        if not self._signer.verify(method, path, org_id, int(expires), signature):
            raise refusals.invalid(f"{refusals.name}'s signature does not match")
        seconds_left = int(expires) - int(self._clock.now().timestamp())
        if seconds_left <= 0:
            raise refusals.expired(f"{refusals.name} has expired; {refusals.expired_hint}")
        return SignedUrl(org_id=org_id, seconds_left=seconds_left)
