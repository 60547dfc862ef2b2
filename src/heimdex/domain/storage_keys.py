"""The storage layout (DESIGN.md §4). Keys are built here and only here; adapters never build keys.

```
uploads/{org_id}/{upload_id}/{safe_source_name}
derived/{org_id}/sidecars/{asset_id}.json
derived/{org_id}/{asset_id}/thumbs/{index:04d}.{jpg|webp}
derived/{org_id}/{asset_id}/storyboard/sprite-{index:02d}.{jpg|webp}
derived/{org_id}/{asset_id}/poster/{milliseconds:09d}.jpg
```
"""

from __future__ import annotations

import re
import unicodedata
from uuid import UUID

from heimdex.domain.errors import InvalidStorageKey

# Used with ``fullmatch``: ``match`` with ``$`` accepts a trailing newline ("org-a\n").
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._ -]+")
_MAX_NAME_LENGTH = 120
THUMBNAIL_FORMATS = frozenset({"jpg", "webp"})


def is_valid_org_id(org_id: str) -> bool:
    """Org ids become path segments, so they are restricted to a safe alphabet."""
    return bool(_ORG_ID.fullmatch(org_id)) and ".." not in org_id


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


DERIVED_ROOT = "derived/"
_SIDECARS = "sidecars/"
_SIDECAR_SUFFIX = ".json"


def derived_prefix(org_id: str) -> str:
    return f"{DERIVED_ROOT}{_org_segment(org_id)}/"


def sidecars_prefix(org_id: str) -> str:
    return f"{derived_prefix(org_id)}{_SIDECARS}"


def sidecar_key(org_id: str, asset_id: UUID) -> str:
    return f"{sidecars_prefix(org_id)}{asset_id}{_SIDECAR_SUFFIX}"


def asset_derived_prefix(org_id: str, asset_id: UUID) -> str:
    return f"{derived_prefix(org_id)}{asset_id}/"


def thumbnail_key(org_id: str, asset_id: UUID, index: int, fmt: str) -> str:
    if fmt not in THUMBNAIL_FORMATS:
        raise InvalidStorageKey(
            f"thumbnail format {fmt!r} is not one of {sorted(THUMBNAIL_FORMATS)}"
        )
    return f"{asset_derived_prefix(org_id, asset_id)}thumbs/{index:04d}.{fmt}"


def storyboard_prefix(org_id: str, asset_id: UUID) -> str:
    return f"{asset_derived_prefix(org_id, asset_id)}storyboard/"


def sprite_key(org_id: str, asset_id: UUID, index: int, fmt: str) -> str:
    """A storyboard's sprite sheet ``index``."""
    if fmt not in THUMBNAIL_FORMATS:
        raise InvalidStorageKey(f"sprite format {fmt!r} is not one of {sorted(THUMBNAIL_FORMATS)}")
    return f"{storyboard_prefix(org_id, asset_id)}sprite-{index:02d}.{fmt}"


def poster_prefix(org_id: str, asset_id: UUID) -> str:
    return f"{asset_derived_prefix(org_id, asset_id)}poster/"


def poster_key(org_id: str, asset_id: UUID, seconds: float) -> str:
    """The poster taken at ``seconds``: the time is in the name, so a new choice is a new URL
    (a browser's cached copy of the old one never stands in for it)."""
    return f"{poster_prefix(org_id, asset_id)}{max(round(seconds * 1000), 0):09d}.jpg"


def org_of_derived_name(name: str) -> str | None:
    """The organisation a name listed under ``DERIVED_ROOT`` (``"{org_id}/"``) stands for."""
    org_id = name.removesuffix("/")
    return org_id if name.endswith("/") and is_valid_org_id(org_id) else None


def asset_of_derived_name(name: str) -> UUID | None:
    """The asset a name listed under ``derived_prefix`` (``"{asset_id}/"``) stands for."""
    return _canonical_uuid(name.removesuffix("/")) if name.endswith("/") else None


def asset_of_sidecar_name(name: str) -> UUID | None:
    """The asset a name listed under ``sidecars_prefix`` (``"{asset_id}.json"``) stands for."""
    if not name.endswith(_SIDECAR_SUFFIX):
        return None
    return _canonical_uuid(name.removesuffix(_SIDECAR_SUFFIX))


def asset_of_derived_key(org_id: str, key: str) -> UUID | None:
    """The asset a key of ``org_id``'s derived files (a thumbnail, the sidecar) belongs to;
    ``None`` for a key that is no derived file of that organisation."""
    try:
        prefix = derived_prefix(org_id)
    except InvalidStorageKey:
        return None
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    first, slash, tail = rest.partition("/")
    if not slash:
        return None
    if first + slash == _SIDECARS:
        return None if "/" in tail else asset_of_sidecar_name(tail)
    return asset_of_derived_name(first + slash)


def _canonical_uuid(text: str) -> UUID | None:
    """The UUID ``text`` spells as this module writes it (lower-case, hyphenated), else
    ``None``: another spelling is another key, never the same asset."""
    try:
        value = UUID(text)
    except ValueError:
        return None
    return value if str(value) == text else None


def validate_key(key: str) -> str:
    """Refuse a key that could escape its prefix: empty, absolute, dot segments, odd characters."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidStorageKey(f"storage key {key!r} is not valid")
    segments = key.split("/")
    if any(seg in ("", ".", "..") for seg in segments[:-1]) or segments[-1] in (".", ".."):
        raise InvalidStorageKey(f"storage key {key!r} is not valid")
    return key
