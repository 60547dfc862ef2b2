"""The storage layout (DESIGN.md §4). Keys are built here and only here; adapters never build keys.

```
uploads/{org_id}/{upload_id}/{safe_source_name}
derived/{org_id}/sidecars/{asset_id}.json
derived/{org_id}/{asset_id}/thumbs/{index:04d}.{jpg|webp}
```
"""

from __future__ import annotations

import re
import unicodedata
from uuid import UUID

from heimdex.domain.errors import InvalidStorageKey

_ORG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._ -]+")
_MAX_NAME_LENGTH = 120
THUMBNAIL_FORMATS = frozenset({"jpg", "webp"})


def is_valid_org_id(org_id: str) -> bool:
    """Org ids become path segments, so they are restricted to a safe alphabet."""
    return bool(_ORG_ID.match(org_id)) and ".." not in org_id


def _org_segment(org_id: str) -> str:
    if not is_valid_org_id(org_id):
        raise InvalidStorageKey(f"org_id {org_id!r} cannot be used in a storage key")
    return org_id


def safe_source_name(name: str) -> str:
    """Reduce a client's file name to one safe path segment, keeping its extension readable."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE_NAME_CHARS.sub("_", ascii_name).strip(" .")
    cleaned = re.sub(r"\s+", "_", cleaned).lstrip("-")
    if len(cleaned) > _MAX_NAME_LENGTH:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            cleaned = stem[: _MAX_NAME_LENGTH - len(ext) - 1] + "." + ext
        else:
            cleaned = cleaned[:_MAX_NAME_LENGTH]
    return cleaned or "upload"


def uploads_prefix(org_id: str) -> str:
    return f"uploads/{_org_segment(org_id)}/"


def upload_key(org_id: str, upload_id: UUID, source_name: str) -> str:
    return f"{uploads_prefix(org_id)}{upload_id}/{safe_source_name(source_name)}"


def derived_prefix(org_id: str) -> str:
    return f"derived/{_org_segment(org_id)}/"


def sidecar_key(org_id: str, asset_id: UUID) -> str:
    return f"{derived_prefix(org_id)}sidecars/{asset_id}.json"


def asset_derived_prefix(org_id: str, asset_id: UUID) -> str:
    return f"{derived_prefix(org_id)}{asset_id}/"


def thumbnail_key(org_id: str, asset_id: UUID, index: int, fmt: str) -> str:
    if fmt not in THUMBNAIL_FORMATS:
        raise InvalidStorageKey(
            f"thumbnail format {fmt!r} is not one of {sorted(THUMBNAIL_FORMATS)}"
        )
    return f"{asset_derived_prefix(org_id, asset_id)}thumbs/{index:04d}.{fmt}"


def validate_key(key: str) -> str:
    """Refuse a key that could escape its prefix: empty, absolute, dot segments, odd characters."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidStorageKey(f"storage key {key!r} is not valid")
    segments = key.split("/")
    if any(seg in ("", ".", "..") for seg in segments[:-1]) or segments[-1] in (".", ".."):
        raise InvalidStorageKey(f"storage key {key!r} is not valid")
    return key
