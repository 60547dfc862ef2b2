"""The ``Content-Type`` an object is stored with, from its key's extension, so a presigned GET
answers a thumbnail as an image and a sidecar as JSON."""

from __future__ import annotations

import mimetypes

_KNOWN = {
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".json": "application/json",
}
_FALLBACK = "application/octet-stream"


def content_type_for(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot > 0 else ""
    # mimetypes reads the host's tables, which differ between machines: ours first.
    return _KNOWN.get(extension) or mimetypes.guess_type(name)[0] or _FALLBACK
