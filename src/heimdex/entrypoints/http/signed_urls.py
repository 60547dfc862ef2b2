"""What the signed-URL routes (the upload PUT, file GETs) check of their query before the
signature: checks that must refuse, never crash, on whatever a stranger puts there."""

from __future__ import annotations

# Epoch seconds fit in 12 digits for the next 30,000 years; int() of a much longer digit
# string raises ValueError (Python's 4,300-digit limit): a 500 instead of a 401.
_MAX_EXPIRES_DIGITS = 12


def is_epoch_seconds(value: str) -> bool:
    """Whether ``value`` is a plain decimal ``expires`` (ASCII digits only: ``"²"`` is a digit
    to ``str.isdigit`` and not to ``int``)."""
    return 0 < len(value) <= _MAX_EXPIRES_DIGITS and value.isascii() and value.isdigit()
