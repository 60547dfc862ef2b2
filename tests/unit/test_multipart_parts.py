"""How a multipart upload is cut into parts: S3's floor and ceiling hold for every size."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest

from heimdex.adapters.storage.s3 import DEFAULT_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, S3Storage
from heimdex.adapters.storage.s3_presign import part_sizes

MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, [1]),
        (8 * MIB, [8 * MIB]),
        (8 * MIB + 1, [8 * MIB, 1]),
        (11 * MIB, [8 * MIB, 3 * MIB]),
        (24 * MIB, [8 * MIB] * 3),
    ],
)
def test_parts_are_the_part_size_and_the_last_one_the_rest(total: int, expected: list[int]) -> None:
    assert part_sizes(total, 8 * MIB) == expected


@pytest.mark.parametrize("total", [1, 5 * MIB, 80 * GIB, 80 * GIB + 1, 5 * 1024 * GIB])
def test_the_part_size_keeps_every_upload_within_s3s_limits(tmp_path: Path, total: int) -> None:
    storage = S3Storage(bucket="b", temp_dir=tmp_path)
    part_size = storage._part_size_for(total)
    sizes = part_sizes(total, part_size)
    assert part_size >= DEFAULT_PART_SIZE
    assert sum(sizes) == total
    assert len(sizes) <= MAX_PARTS
    assert all(size >= MIN_PART_SIZE for size in sizes[:-1])
    assert 0 < sizes[-1] <= part_size


@pytest.mark.parametrize("etag", ['"x"\n', "\n", "a b", ""])
def test_a_commit_part_etag_is_printable_ascii_to_its_last_character(etag: str) -> None:
    from heimdex.entrypoints.http.ingest import CommitRequest

    body = {"upload_id": str(uuid.uuid4()), "parts": [{"part_number": 1, "etag": etag}]}
    with pytest.raises(msgspec.ValidationError, match="etag"):
        msgspec.json.decode(msgspec.json.encode(body), type=CommitRequest)
