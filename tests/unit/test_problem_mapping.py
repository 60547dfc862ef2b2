"""Every domain error has an HTTP status chosen on purpose, never the 500 fallback."""

from __future__ import annotations

import inspect

import pytest

from heimdex.domain import errors
from heimdex.entrypoints.http.problems import status_for

ALL_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.HeimdexError) and cls is not errors.HeimdexError
]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_maps_to_a_deliberate_status(cls: type[errors.HeimdexError]) -> None:
    status = status_for(cls("x"))
    assert status != 500
    assert 400 <= status < 600


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))


def test_busy_probes_say_when_to_come_back() -> None:
    """An organisation past its probe slots is a 429 limit; every prober process busy is a
    transient 503 (the handlers add ``Retry-After`` to both)."""
    assert status_for(errors.ProbeBusy("x", retry_after=5)) == 429
    assert isinstance(errors.ProbeBusy("x"), errors.LimitExceeded)
    assert status_for(errors.DecodersBusy("x")) == 503
    assert errors.DecodersBusy.transient
    assert status_for(errors.MetadataTooLarge("x")) == 422
