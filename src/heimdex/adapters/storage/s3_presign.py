"""Presigned S3 URLs: the upload PUT a client sends its file with, and GETs for derived files.

A SigV4 presigned URL signs the *names and values* of the headers it lists in
``X-Amz-SignedHeaders``; S3 refuses a request whose signed headers differ. So the upload URL
binds what init declared: ``Content-Length`` and ``Content-Type``, ``x-amz-checksum-sha256``
when a sha256 was declared (S3 then also checks the body against it), and ``If-None-Match: *``
so the object can be written once — a URL that leaks after commit cannot replace the asset.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from heimdex.domain.model import Upload
from heimdex.domain.ports import PartTarget, UploadTarget

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
else:
    S3Client = Any


def _seconds_until(epoch_seconds: float) -> int:
    """``X-Amz-Expires`` counts from signing; at least one second so the URL is well-formed."""
    return max(1, int(epoch_seconds - time.time()))


def upload_headers(upload: Upload) -> dict[str, str]:
    """The headers a client must send with the presigned PUT, exactly as signed."""
    headers = {
        "Content-Type": upload.content_type,
        "Content-Length": str(upload.content_length),
        "If-None-Match": "*",
    }
    if upload.declared_sha256:
        raw = bytes.fromhex(upload.declared_sha256)
        headers["x-amz-checksum-sha256"] = base64.b64encode(raw).decode("ascii")
    return headers


async def presigned_put(client: S3Client, bucket: str, upload: Upload) -> UploadTarget:
    headers = upload_headers(upload)
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": upload.key,
        "ContentType": headers["Content-Type"],
        "ContentLength": upload.content_length,
        "IfNoneMatch": headers["If-None-Match"],
    }
    if "x-amz-checksum-sha256" in headers:
        params["ChecksumSHA256"] = headers["x-amz-checksum-sha256"]
    url = await client.generate_presigned_url(
        "put_object",
        Params=params,
        ExpiresIn=_seconds_until(upload.expires_at.timestamp()),
        HttpMethod="PUT",
    )
    return UploadTarget(url=url, method="PUT", headers=headers)


_PARTS_PER_TURN = 25  # about 5 ms of signing


def part_sizes(total: int, part_size: int) -> list[int]:
    """The sizes of a ``total``-byte upload's parts: ``part_size`` each, the last one less."""
    count = max(1, -(-total // part_size))
    return [part_size] * (count - 1) + [total - part_size * (count - 1)]


async def presigned_parts(
    client: S3Client, bucket: str, upload: Upload, upload_id: str, part_size: int
) -> list[PartTarget]:
    """A presigned UploadPart for each part of the slot's multipart upload, each binding its
    part's ``Content-Length`` (a part of another length is refused by the store).

    Signing is CPU work in the event loop (about 0.2 ms a part, 2 s for 10,000): it lets other
    requests run every ``_PARTS_PER_TURN`` parts."""
    expires = _seconds_until(upload.expires_at.timestamp())
    targets: list[PartTarget] = []
    for number, size in enumerate(part_sizes(upload.content_length, part_size), start=1):
        url = await client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": bucket,
                "Key": upload.key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ContentLength": size,
            },
            ExpiresIn=expires,
            HttpMethod="PUT",
        )
        targets.append(PartTarget(part_number=number, url=url, size=size))
        if number % _PARTS_PER_TURN == 0:
            await anyio.lowlevel.checkpoint()
    return targets


async def presigned_get(client: S3Client, bucket: str, key: str, expires: int) -> str:
    return await client.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": key},
        ExpiresIn=_seconds_until(expires),
        HttpMethod="GET",
    )
