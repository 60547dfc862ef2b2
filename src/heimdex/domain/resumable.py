"""Resumable uploads (tus 1.0): what a chunk's checksum is, and the protocol's constants."""

from __future__ import annotations

import msgspec

TUS_VERSION = "1.0.0"
#: ``Upload-Checksum`` algorithms the server verifies (tus checksum extension, hashlib names)
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "sha512")


class ChunkChecksum(msgspec.Struct, frozen=True, kw_only=True):
    """The digest a tus PATCH declares for its body (``Upload-Checksum``)."""

    algorithm: str
    digest: bytes
