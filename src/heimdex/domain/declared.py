"""What a client declares about a body it sends (its length, perhaps its sha256), and the one
check of the bytes against it: by the storage adapters as the bytes arrive, by the ingest use
case when the stored object is read back."""

from __future__ import annotations

from dataclasses import dataclass

from heimdex.domain.errors import ChecksumMismatch, LengthMismatch, UploadTooLarge


@dataclass(frozen=True, slots=True)
class Declared:
    """The declared length and sha256 (hex, either case) of a body; ``None``: not declared."""

    size: int | None = None
    sha256: str | None = None

    def check_so_far(self, size: int) -> None:
        """``UploadTooLarge`` as soon as more than the declared bytes have arrived."""
        if self.size is not None and size > self.size:
            raise UploadTooLarge(f"the body is longer than the declared {self.size} bytes")

    def check(self, size: int, sha256: str | None, *, subject: str = "the body") -> None:
        """``LengthMismatch`` or ``ChecksumMismatch`` when the whole of ``subject`` is not what
        was declared; a sha256 that is not known (``None``) is not compared."""
        if self.size is not None and size != self.size:
            raise LengthMismatch(f"{subject} has {size} bytes, {self.size} were declared")
        if self.sha256 is not None and sha256 is not None and sha256 != self.sha256.lower():
            raise ChecksumMismatch(f"{subject}'s sha256 is {sha256}, not {self.sha256.lower()}")
