"""``HmacUrlSigner``: expiring HMAC-SHA256 signatures for URLs Heimdex serves itself (the local
backend's upload target; later thumbnails), the way a presigned S3 URL works."""

from __future__ import annotations

import hashlib
import hmac


class HmacUrlSigner:
    """Signs ``METHOD\\nPATH\\nORG\\nEXPIRES``. The key is derived from the service secret with a
    label, so a URL signature can never double as a token signature."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"heimdex url signing v1", hashlib.sha256).digest()

    def _mac(self, method: str, path: str, org_id: str, expires: int) -> str:
        message = f"{method.upper()}\n{path}\n{org_id}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, org_id: str, expires: int) -> str:
        return self._mac(method, path, org_id, expires)

    def verify(self, method: str, path: str, org_id: str, expires: int, signature: str) -> bool:
        """True when the signature is ours for exactly these values (expiry is the caller's)."""
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, i.e. a 500
        # for any client that sends one), and a signature of ours is ASCII anyway.
        expected = self._mac(method, path, org_id, expires).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))
