from __future__ import annotations

import pytest

from heimdex.domain.errors import JsonTooDeep, NulCharacter
from heimdex.entrypoints.http.input_guard import (
    MAX_JSON_DEPTH,
    check_json_depth,
    refuse_nul_in,
    refuse_nul_in_scope,
)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_depth_up_to_the_limit_passes_and_one_more_is_refused() -> None:
    check_json_depth(_nested(MAX_JSON_DEPTH))
    check_json_depth(b'{"a": ' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH)
    with pytest.raises(JsonTooDeep):
        check_json_depth(_nested(MAX_JSON_DEPTH + 1))


def test_many_brackets_side_by_side_or_inside_strings_are_not_depth() -> None:
    check_json_depth(b"[" + b"[]," * 10_000 + b"[]]")
    check_json_depth(b'["' + b"[{" * 10_000 + b'"]')
    check_json_depth(b'["\\"' + b"[" * 100 + b'", "\\\\", "' + b"{" * 100 + b'"]')


def test_a_string_cannot_hide_real_nesting() -> None:
    quoted = b'"a \\" [ quoted"'
    with pytest.raises(JsonTooDeep):
        check_json_depth(b"[" * 40 + quoted + b"]" * 40)


def test_nul_anywhere_in_a_decoded_document_is_refused() -> None:
    refuse_nul_in({"a": ["b", {"c": 1, "d": None}]})
    for value in ("\x00", {"a\x00": 1}, {"a": ["ok", "n\x00"]}, [[{"x": "\x00"}]]):
        with pytest.raises(NulCharacter):
            refuse_nul_in(value)


@pytest.mark.parametrize(
    "scope",
    [
        {"path": "/v1/files/a\x00b", "query_string": b"", "headers": []},
        {"path": "/v1/assets", "query_string": b"codec=%00", "headers": []},
        {"path": "/v1/assets", "query_string": b"codec=\x00", "headers": []},
        {"path": "/v1/assets", "query_string": b"", "headers": [(b"x-a", b"1\x002")]},
        {"path": "/v1/assets", "query_string": b"", "headers": [(b"x-\x00", b"1")]},
    ],
)
def test_nul_in_the_path_query_or_headers_is_refused(scope: dict[str, object]) -> None:
    with pytest.raises(NulCharacter):
        refuse_nul_in_scope(scope)  # type: ignore[arg-type]


def test_an_encoded_percent_before_00_is_not_a_nul() -> None:
    refuse_nul_in_scope(
        {"path": "/v1/assets", "query_string": b"codec=%2500", "headers": []}  # type: ignore[arg-type]
    )
