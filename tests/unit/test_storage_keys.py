from __future__ import annotations

from uuid import UUID

import pytest

from heimdex.domain.errors import InvalidStorageKey
from heimdex.domain.storage_keys import (
    asset_of_derived_key,
    asset_of_derived_name,
    asset_of_sidecar_name,
    is_valid_org_id,
    org_of_derived_name,
    safe_source_name,
    sidecar_key,
    thumbnail_key,
    upload_key,
    uploads_prefix,
    validate_key,
)

ASSET = UUID("00000000-0000-4000-8000-000000000001")


def test_layout_matches_the_design() -> None:
    assert upload_key("acme", ASSET, "My Clip.MP4") == f"uploads/acme/{ASSET}/My_Clip.MP4"
    assert sidecar_key("acme", ASSET) == f"derived/acme/sidecars/{ASSET}.json"
    assert thumbnail_key("acme", ASSET, 3, "jpg") == f"derived/acme/{ASSET}/thumbs/0003.jpg"
    assert uploads_prefix("acme") == "uploads/acme/"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\clip.mov", "clip.mov"),
        ("-i http:x .mp4", "i_http_x_.mp4"),
        ("..", "upload"),
        ("", "upload"),
        ("vidéo été.mkv", "video_ete.mkv"),
        ("a%2F..%2Fb.mp4", "a_2F.._2Fb.mp4"),
    ],
)
def test_source_names_are_reduced_to_one_safe_segment(name: str, expected: str) -> None:
    assert safe_source_name(name) == expected


def test_long_names_keep_their_extension() -> None:
    name = safe_source_name("x" * 500 + ".webm")
    assert len(name) <= 120
    assert name.endswith(".webm")


@pytest.mark.parametrize("org", ["acme", "org-1", "a.b_c"])
def test_valid_org_ids(org: str) -> None:
    assert is_valid_org_id(org)


@pytest.mark.parametrize(
    "org", ["", "../x", "a/b", ".hidden", "a..b", "x" * 129, "a b", "org-a\n", "org-a\r\n"]
)
def test_invalid_org_ids_never_become_keys(org: str) -> None:
    assert not is_valid_org_id(org)
    with pytest.raises(InvalidStorageKey):
        uploads_prefix(org)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a/\x00"])
def test_keys_that_could_escape_are_refused(key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        validate_key(key)


def test_thumbnail_formats_are_limited() -> None:
    with pytest.raises(InvalidStorageKey):
        thumbnail_key("acme", ASSET, 0, "svg")


def test_derived_keys_name_their_asset() -> None:
    assert asset_of_derived_key("acme", thumbnail_key("acme", ASSET, 3, "jpg")) == ASSET
    assert asset_of_derived_key("acme", sidecar_key("acme", ASSET)) == ASSET
    assert asset_of_derived_key("other", thumbnail_key("acme", ASSET, 3, "jpg")) is None
    lettered = UUID("abcdef00-0000-4000-8000-000000000001")
    for key in (
        f"derived/acme/{str(lettered).upper()}/thumbs/0000.jpg",  # another spelling
        f"derived/acme/sidecars/{ASSET}.json/x",
        f"derived/acme/sidecars/{ASSET}.txt",
        f"derived/acme/{ASSET}",
        f"uploads/acme/{ASSET}/clip.mp4",
    ):
        assert asset_of_derived_key("acme", key) is None, key


def test_listed_derived_names() -> None:
    assert org_of_derived_name("acme/") == "acme"
    assert org_of_derived_name("acme") is None
    assert org_of_derived_name(".scratch/") is None
    assert asset_of_derived_name(f"{ASSET}/") == ASSET
    assert asset_of_derived_name("sidecars/") is None
    assert asset_of_derived_name(f"{ASSET}") is None
    assert asset_of_sidecar_name(f"{ASSET}.json") == ASSET
    assert asset_of_sidecar_name(f"{ASSET}.json.part") is None
