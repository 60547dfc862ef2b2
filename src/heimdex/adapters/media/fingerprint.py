"""Frame fingerprints: pHash (``imagehash``) of a frame's luma, in the decode pool.

Why pHash over PDQ (``pdqhash``, 256 bits): measured on 52 frames of the shared media and five
generated clips (``benchmarks/search.py`` repeats it), pHash moved at most 2 of 64 bits (3 %)
when a frame was rescaled to half size or to a 160-pixel tile, where PDQ moved up to 30 % of its
bits; on a JPEG re-encode at quality 25 and a 30 % brightening both stayed under 13 %; cropping
5 % off every side breaks both (15 % and 29 % on average). Unrelated frames sit near half the
bits for both. Storyboard tiles and thumbnails are rescaled copies by nature, so pHash.

Where: storyboard tiles, thumbnails and the poster are fingerprinted by the renderers that made
them (``pyav_pictures``, ``pyav_thumbnailer``) from the filtered picture they already hold —
nothing is decoded again. A dull frame (near-black or flat, the thumbnails' own test) gets no
fingerprint: every black frame looks like every other. A search image is decoded here too, by
Pillow, in a :class:`DecodePool` worker: only JPEG, PNG and WebP, one frame, within the
decoders' pixel limit, checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import imagehash
from PIL import Image

from heimdex.adapters.media.decode_pool import DecodePool
from heimdex.adapters.media.limits import DecodeLimits
from heimdex.adapters.media.pooled_decoder import PooledDecoder
from heimdex.domain.errors import AnimatedImage, ImageTooLarge, InvalidImage, ProberUnavailable

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
#: bytes of a search image, at most
MAX_IMAGE_BYTES = 5 << 20
_IMAGE_SECONDS = 10.0


def fingerprint_luma(plane: Any, width: int, height: int, stride: int) -> int:
    """The pHash of an 8-bit luma plane (a buffer of ``height`` rows of ``stride`` bytes)."""
    image = Image.frombuffer("L", (width, height), bytes(plane), "raw", "L", stride, 1)
    return fingerprint_image(image)


def fingerprint_picture(picture: Any) -> int:
    """The pHash of a PyAV picture's luma plane (yuv420p, as the renderers filter to)."""
    plane = picture.planes[0]
    return fingerprint_luma(plane, picture.width, picture.height, plane.line_size)


def fingerprint_image(image: Image.Image) -> int:
    """The pHash of a decoded picture: the library's own call, as an unsigned 64-bit integer."""
    return int(str(imagehash.phash(image)), 16)


def fingerprint_encoded(data: bytes, max_pixels: int = 0) -> int:
    """The fingerprint of an encoded image (in a worker). Refuses what is not one JPEG, PNG or
    WebP picture, and one declaring more than ``max_pixels`` (0: Pillow's own bound)."""
    if not data:
        raise InvalidImage("the image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    limit = max_pixels or Image.MAX_IMAGE_PIXELS or 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if limit and width * height > limit:
                    raise ImageTooLarge(
                        f"the image declares {width}x{height} pixels, more than {limit}"
                    )
                if getattr(image, "n_frames", 1) > 1:
                    raise AnimatedImage("the image is animated: send one frame")
                image.load()
                return fingerprint_image(image.convert("L"))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"the image is too large: {exc}") from None
        except InvalidImage:
            raise
        except MemoryError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's "not an image"
            raise InvalidImage(f"the image could not be read: {exc}") from None


class PooledImageFingerprinter(PooledDecoder):
    """The ``ImageFingerprinter`` port: search images decoded and fingerprinted in a decode
    pool of their own (``workers`` processes, started when first needed), so a query never waits
    behind a sidecar job and a hostile image costs one worker at most."""

    name = "phash"

    def __init__(
        self,
        workers: int = 1,
        *,
        limits: DecodeLimits | None = None,
        wait_seconds: float | None = None,
        pool: DecodePool | None = None,
    ) -> None:
        super().__init__(
            pool,
            workers=workers,
            preload=[__name__],
            limits=limits,
            unavailable=ProberUnavailable,
            wait_seconds=wait_seconds,
        )

    async def fingerprint(self, data: bytes) -> int:
        if not data:  # nothing to decode: no worker needed to say so
            raise InvalidImage("the image is empty")
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageTooLarge(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
        try:
            return await self._run_on(
                "the image",
                fingerprint_encoded,
                data,
                self._pool.limits.max_pixels,
                call_seconds=_IMAGE_SECONDS,
            )
        except TimeoutError:
            raise InvalidImage(
                f"decoding the image took longer than {_IMAGE_SECONDS:g} s"
            ) from None
