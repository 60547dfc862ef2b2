"""``S3Storage``: objects in an S3 bucket (AWS S3 or an S3-compatible store such as MinIO).

Built on aioboto3 (aiobotocore under it): botocore's SigV4 presigner signs *headers* into a
presigned PUT, which is how an upload URL is bound to the declared length, content type and
sha256 (see ``s3_presign``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import aioboto3
import anyio
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from heimdex.adapters.offload import run_blocking
from heimdex.adapters.storage.content_types import content_type_for
from heimdex.adapters.storage.s3_presign import (
    part_sizes,
    presigned_get,
    presigned_parts,
    presigned_put,
)
from heimdex.domain.chunks import rechunk
from heimdex.domain.declared import Declared
from heimdex.domain.errors import (
    ChunkChecksumMismatch,
    SourceNotFound,
    StorageError,
    UploadNotReceived,
    UploadPartsMissing,
    UploadTooLarge,
)
from heimdex.domain.model import Upload
from heimdex.domain.ports import (
    LocalCopy,
    PartETag,
    PartTarget,
    ScratchFile,
    StoredObject,
    UploadTarget,
)
from heimdex.domain.resumable import ChunkChecksum
from heimdex.domain.storage_keys import validate_key
from heimdex.logs import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef
else:
    S3Client = CompletedPartTypeDef = Any

CHUNK_SIZE = 1024 * 1024
# A multipart part is held in memory while it is sent: this bounds what a write holds.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
MAX_PARTS = 10_000  # S3's ceiling
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
#: CompleteMultipartUpload's answers for parts that are not (all) the stored ones
_BAD_PARTS = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})
#: Each temporary copy is a directory ``s3-…`` of its own under ``temp_dir``; the sweep takes
#: only those, never what others keep beside them (the legacy endpoint's uploads).
_COPY_PREFIX = "s3-"
#: A resumable write's bytes past its last whole part wait in objects under this prefix, one per
#: part number they will start (as tusd's S3 store keeps its ``.part``): a part must be at least
#: MIN_PART_SIZE, a tus PATCH may be any size, and the next PATCH may reach another process.
RESUMABLE_TAILS = "resumable-tails/"

AddressingStyle = Literal["auto", "path", "virtual"]

log = get_logger(__name__)


class S3Storage:
    """Keys are object keys in one bucket. Uploads go straight from the client to S3 with a
    presigned PUT; derived files are single PUTs, streams over one part become a multipart
    upload completed only once every check passed, so a reader never sees half an object.

    Reads stream: ``local_copy`` and ``local_path`` copy the object to a temporary file chunk
    by chunk (FFmpeg and PyAV open local files only), ``local_copy`` hashing each chunk on its
    way (one GET both checks and copies); ``read_chunks`` never holds more than a chunk.
    One client per storage, opened on first use in the running event loop and closed by
    ``aclose``; credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``…,
    ``AWS_PROFILE``, web identity, instance or container roles).
    """

    def __init__(
        self,
        *,
        bucket: str,
        temp_dir: Path,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: AddressingStyle = "auto",
        part_size: int = DEFAULT_PART_SIZE,
        session: aioboto3.Session | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.bucket = bucket
        self.temp_dir = temp_dir
        self.part_size = part_size
        self._endpoint_url = endpoint_url
        # Presigned URLs name the host the client will reach; a store reached inside a private
        # network under another name (compose's http://minio:9000) signs for its public one.
        self._public_endpoint_url = public_endpoint_url
        self._session = session or aioboto3.Session(region_name=region)
        self._config = AioConfig(
            signature_version="s3v4",  # botocore would presign SigV2 for a custom endpoint
            s3={"addressing_style": addressing_style},
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=60,
        )
        self._stack: AsyncExitStack | None = None
        self._pair: tuple[S3Client, S3Client] | None = None
        self._lock = anyio.Lock()

    # -- the client ---------------------------------------------------------------------------
    async def _clients(self) -> tuple[S3Client, S3Client]:
        """The client for requests and the one for presigning (the same one unless a public
        endpoint is set), opened once."""
        if self._pair is None:
            async with self._lock:
                if self._pair is None:
                    self._pair = await self._open()
        return self._pair

    async def _open(self) -> tuple[S3Client, S3Client]:
        async with AsyncExitStack() as stack:  # closes what opened if a later step fails
            client = await stack.enter_async_context(
                self._session.client("s3", endpoint_url=self._endpoint_url, config=self._config)
            )
            signer = client
            if self._public_endpoint_url:
                signer = await stack.enter_async_context(
                    self._session.client(
                        "s3", endpoint_url=self._public_endpoint_url, config=self._config
                    )
                )
            self._stack = stack.pop_all()
        return client, signer

    async def _s3(self) -> S3Client:
        return (await self._clients())[0]

    async def aclose(self) -> None:
        """Close the HTTP connections (the process is shutting down)."""
        stack, self._stack, self._pair = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # -- identifiers and presigned URLs -------------------------------------------------------
    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    async def download_url(self, key: str, base_url: str, expires: int) -> str:
        """A presigned GET straight from the bucket (``base_url`` is not needed)."""
        _, signer = await self._clients()
        return await presigned_get(signer, self.bucket, validate_key(key), expires)

    async def upload_target(self, upload: Upload, base_url: str) -> UploadTarget:
        """A presigned PUT straight to the bucket, bound to the declared length, type and
        sha256, and to an object that does not exist yet."""
        _, signer = await self._clients()
        return await presigned_put(signer, self.bucket, upload)

    # -- writes -------------------------------------------------------------------------------
    def _part_size_for(self, expected_size: int | None) -> int:
        if expected_size is None:
            return self.part_size
        return max(self.part_size, -(-expected_size // MAX_PARTS))

    async def write_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, declared: Declared | None = None
    ) -> StoredObject:
        validate_key(key)
        declared = declared or Declared()
        client = await self._s3()
        part_size = self._part_size_for(declared.size)
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        multipart: _Multipart | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                declared.check_so_far(size)
                await run_blocking(digest.update, chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= part_size:
                    if multipart is None:
                        multipart = await _Multipart.start(client, self.bucket, key)
                    await multipart.send(b"".join(pending))
                    pending.clear()
                    pending_size = 0
            sha256 = digest.hexdigest()
            declared.check(size, sha256)
            if multipart is None:  # one PUT; the store checks the sha256 we send along
                with _storage_errors(f"writing {key!r}"):
                    await client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=b"".join(pending),
                        ContentType=content_type_for(key),
                        ChecksumSHA256=_base64_sha256(sha256),
                    )
            else:
                if pending:
                    await multipart.send(b"".join(pending))
                await multipart.complete()
        except BaseException:
            if multipart is not None:
                with anyio.CancelScope(shield=True):  # abort even when we were cancelled
                    await multipart.abort()
            raise
        return StoredObject(key=key, size_bytes=size, sha256=sha256)

    async def write_bytes(self, key: str, data: bytes) -> StoredObject:
        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(key, one_chunk())

    # -- resumable writes ---------------------------------------------------------------------
    async def begin_resumable(self, key: str) -> str:
        """A multipart upload; the session names its part size too, so a write started under
        one ``part_size`` setting finishes under it."""
        validate_key(key)
        client = await self._s3()
        with _storage_errors(f"writing {key!r}"):
            created = await client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type_for(key)
            )
        return f"{self.part_size}:{created['UploadId']}"

    async def append_resumable(
        self,
        key: str,
        session: str,
        *,
        offset: int,
        total: int,
        chunks: AsyncIterable[bytes],
        checksum: ChunkChecksum | None = None,
    ) -> int:
        """Whole parts go up as they fill; what is left past the last whole part is stored
        as a tail object and read back by the next append. Parts after the offset's last whole
        part are always sent again before the write completes, so a part a failed append sent
        is replaced, never used."""
        validate_key(key)
        client = await self._s3()
        base_part_size, upload_id = _parse_session(session)
        part_size = max(base_part_size, -(-total // MAX_PARTS))
        whole = offset // part_size
        if whole:  # the tail before the recorded offset's part, if any: a whole part now
            with suppress(StorageError):
                await self._delete_tail(key, whole)
        buffer = bytearray()
        if offset % part_size:
            buffer += await self._read_tail(key, whole + 1, offset % part_size)
        hasher = hashlib.new(checksum.algorithm) if checksum is not None else None
        written = 0
        number = whole + 1
        async for chunk in chunks:
            written += len(chunk)
            if offset + written > total:
                raise UploadTooLarge(f"the upload is {total} bytes; this chunk goes past it")
            if hasher is not None:
                await run_blocking(hasher.update, chunk)
            buffer += chunk
            while len(buffer) >= part_size:
                await self._send_part(key, upload_id, number, bytes(buffer[:part_size]))
                del buffer[:part_size]
                number += 1
        if checksum is not None and hasher is not None and hasher.digest() != checksum.digest:
            raise ChunkChecksumMismatch(
                f"the chunk's {checksum.algorithm} is not the one in Upload-Checksum; "
                "it was discarded"
            )
        reached = offset + written
        if reached == total:
            if buffer:
                await self._send_part(key, upload_id, number, bytes(buffer))
            await self._complete(key, upload_id, -(-total // part_size))
            await self._delete_tails(key)
            return reached
        if buffer:
            with _storage_errors(f"writing {key!r}"):
                await client.put_object(
                    Bucket=self.bucket, Key=_tail_key(key, number), Body=bytes(buffer)
                )
        return reached

    async def _read_tail(self, key: str, number: int, size: int) -> bytes:
        client = await self._s3()
        tail = _tail_key(key, number)
        with _storage_errors(f"reading {tail!r}", missing_key=tail):
            response = await client.get_object(
                Bucket=self.bucket, Key=tail, Range=f"bytes=0-{size - 1}"
            )
            data = await response["Body"].read()
        if len(data) != size:
            raise StorageError(f"the resumable upload of {key!r} lost bytes; start a new upload")
        return data

    async def _delete_tail(self, key: str, number: int) -> None:
        client = await self._s3()
        with _storage_errors(f"deleting the tail of {key!r}"):
            await client.delete_object(Bucket=self.bucket, Key=_tail_key(key, number))

    async def _delete_tails(self, key: str) -> None:
        with suppress(StorageError):  # best effort: an orphan tail is small and harmless
            await self.delete_prefix(f"{RESUMABLE_TAILS}{key}/")

    async def _send_part(self, key: str, upload_id: str, number: int, data: bytes) -> None:
        client = await self._s3()
        with _storage_errors(f"writing {key!r} (part {number})"):
            await client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )

    async def _complete(self, key: str, upload_id: str, count: int) -> None:
        """Completes with parts 1..count as the store lists them: the last sent of each."""
        client = await self._s3()
        etags: dict[int, str] = {}
        with _storage_errors(f"writing {key!r}"):
            paginator = client.get_paginator("list_parts")
            async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    etags[part["PartNumber"]] = part["ETag"]
            if missing := [n for n in range(1, count + 1) if n not in etags]:
                raise StorageError(f"parts {missing[:5]} of {key!r} are missing")
        try:
            with _storage_errors(f"writing {key!r}"):
                await client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in range(1, count + 1)]
                    },
                )
        except StorageError:
            # Completing a large upload can outlast the read timeout, and a retry then finds
            # the upload gone: the object being there whole is the answer that counts.
            if (await self.stat(key)) is None:
                raise
            log.warning("multipart_completed_despite_error", key=key)

    async def discard_resumable(self, key: str, session: str) -> None:
        validate_key(key)
        client = await self._s3()
        _, upload_id = _parse_session(session)
        with suppress(ClientError, BotoCoreError, OSError):
            await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        await self._delete_tails(key)

    # -- multipart uploads the client sends ---------------------------------------------------
    async def begin_multipart(self, upload: Upload) -> str:
        """A multipart upload of the slot's key; the session names the part size, chosen from
        the declared length (``part_size`` or more, at most ``MAX_PARTS`` parts)."""
        validate_key(upload.key)
        client = await self._s3()
        with _storage_errors(f"writing {upload.key!r}"):
            created = await client.create_multipart_upload(
                Bucket=self.bucket, Key=upload.key, ContentType=upload.content_type
            )
        return f"{self._part_size_for(upload.content_length)}:{created['UploadId']}"

    async def multipart_targets(self, upload: Upload, session: str) -> list[PartTarget]:
        part_size, upload_id = _parse_session(session)
        _, signer = await self._clients()
        return await presigned_parts(signer, self.bucket, upload, upload_id, part_size)

    async def complete_multipart(
        self, key: str, session: str, total: int, parts: Sequence[PartETag] | None
    ) -> None:
        validate_key(key)
        client = await self._s3()
        part_size, upload_id = _parse_session(session)
        sizes = part_sizes(total, part_size)
        if parts is None:
            listed = await self._listed_parts(key, upload_id)
            if listed is None:  # completed already
                return
            wrong = [
                n for n, size in enumerate(sizes, start=1) if listed.get(n, ("", -1))[1] != size
            ]
            if wrong:
                raise UploadPartsMissing(
                    f"parts {wrong[:10]} of {len(sizes)} are missing or not their size; PUT "
                    "them to their URLs and commit again",
                )
            chosen = [(n, listed[n][0]) for n in range(1, len(sizes) + 1)]
        else:
            chosen = sorted((p.part_number, p.etag) for p in parts)
            if [n for n, _ in chosen] != list(range(1, len(sizes) + 1)):
                given = {n for n, _ in chosen}
                wrong = [n for n in range(1, len(sizes) + 1) if n not in given]
                raise UploadPartsMissing(
                    f"this upload has {len(sizes)} parts: give each of 1..{len(sizes)} once "
                    f"(missing: {wrong[:10]})",
                )
        try:
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in chosen]},
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _BAD_PARTS:
                raise UploadPartsMissing(
                    f"the store refused the parts ({code}): a part is missing or an ETag is not "
                    "the one its PUT answered; PUT it again and commit again"
                ) from exc
            if code == "NoSuchUpload":
                # Completed by a commit that lost its answer, or aborted (expired and swept).
                if await self.stat(key) is not None:
                    return
                raise UploadNotReceived(
                    "the multipart upload is gone; ask for a new upload slot"
                ) from exc
            with _storage_errors(f"writing {key!r}"):
                raise
        except (BotoCoreError, OSError):
            # A long completion can outlast the read timeout: the whole object is the answer.
            if await self.stat(key) is None:
                with _storage_errors(f"writing {key!r}"):
                    raise
            log.warning("multipart_completed_despite_error", key=key)

    async def _listed_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        """Each stored part's ETag and size by number; ``None`` when the upload was completed."""
        client = await self._s3()
        listed: dict[int, tuple[str, int]] = {}
        try:
            paginator = client.get_paginator("list_parts")
            async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                for part in page.get("Parts", []):
                    listed[part["PartNumber"]] = (part["ETag"], part["Size"])
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) != "NoSuchUpload":
                with _storage_errors(f"listing the parts of {key!r}"):
                    raise
            if await self.stat(key) is not None:
                return None
            raise UploadNotReceived(
                "the multipart upload is gone; ask for a new upload slot"
            ) from exc
        except (BotoCoreError, OSError):
            with _storage_errors(f"listing the parts of {key!r}"):
                raise
        return listed

    # -- reads --------------------------------------------------------------------------------
    async def stat(self, key: str) -> StoredObject | None:
        validate_key(key)
        client = await self._s3()
        try:
            with _storage_errors(f"reading {key!r}", missing_key=key):
                head = await client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except SourceNotFound:
            return None
        return StoredObject(
            key=key,
            size_bytes=head["ContentLength"],
            sha256=_full_object_sha256(head.get("ChecksumSHA256"), head.get("ChecksumType")),
        )

    async def read_chunks(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of about ``CHUNK_SIZE``, streamed from one GET."""
        validate_key(key)
        client = await self._s3()
        with _storage_errors(f"reading {key!r}", missing_key=key):
            response = await client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                async for chunk in rechunk(body.iter_chunks(CHUNK_SIZE), CHUNK_SIZE):
                    yield chunk
            finally:
                body.close()

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[LocalCopy]:
        """A temporary copy from one GET, each chunk hashed as it is written, removed on exit."""
        digest = hashlib.sha256()
        async with self._temporary_copy(key, digest.update) as (path, size):
            stored = StoredObject(key=key, size_bytes=size, sha256=digest.hexdigest())
            yield LocalCopy(path=path, stored=stored)

    @asynccontextmanager
    async def local_path(self, key: str) -> AsyncIterator[Path]:
        """A temporary copy of the object, written chunk by chunk, removed on exit."""
        async with self._temporary_copy(key, None) as (path, _):
            yield path

    @asynccontextmanager
    async def _temporary_copy(
        self, key: str, observe: Callable[[bytes], object] | None
    ) -> AsyncIterator[tuple[Path, int]]:
        """The object streamed to a file in a directory of its own under ``temp_dir``, each
        chunk also handed to ``observe``; answers the path and the bytes written."""
        validate_key(key)
        await run_blocking(self.temp_dir.mkdir, parents=True, exist_ok=True)
        directory = Path(
            await run_blocking(tempfile.mkdtemp, prefix=_COPY_PREFIX, dir=self.temp_dir)
        )
        try:
            # The key's own last segment: a safe name whose extension a prober may look at.
            path = directory / key.rsplit("/", 1)[-1]
            size = 0
            handle: BinaryIO = await run_blocking(open, path, "xb")
            try:
                async for chunk in self.read_chunks(key):
                    await run_blocking(_write_and_observe, handle, chunk, observe)
                    size += len(chunk)
            finally:
                handle.close()
            yield path, size
        finally:
            with anyio.CancelScope(shield=True):  # remove the copy even when we were cancelled
                await run_blocking(shutil.rmtree, directory, ignore_errors=True)

    # -- scratch ------------------------------------------------------------------------------
    async def sweep_scratch(self, modified_before: datetime) -> list[ScratchFile]:
        """Remove the temporary copies under ``temp_dir`` that nothing in them was written to
        since ``modified_before``. The bucket is never touched: a write in flight holds its
        parts in memory and in S3 (a lifecycle rule reaps abandoned multipart uploads)."""
        return await run_blocking(_sweep_copies, self.temp_dir, modified_before.timestamp())

    async def list_names(self, prefix: str) -> AsyncIterator[str]:
        """One ``/``-delimited listing of ``prefix``, page by page: common prefixes are the
        deeper levels, contents the objects."""
        if not prefix.endswith("/"):
            raise StorageError(f"{prefix!r} is not a prefix ending in '/'")
        validate_key(prefix)
        client = await self._s3()
        with _storage_errors(f"listing {prefix!r}"):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"][len(prefix) :]
                for item in page.get("Contents", []):
                    yield item["Key"][len(prefix) :]

    # -- deletes ------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        validate_key(key)
        client = await self._s3()
        with _storage_errors(f"deleting {key!r}"):
            await client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix)
        client = await self._s3()
        count = 0
        with _storage_errors(f"deleting under {prefix!r}"):
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [item["Key"] for item in page.get("Contents", [])]
                for start in range(0, len(keys), _DELETE_BATCH):
                    batch = keys[start : start + _DELETE_BATCH]
                    answer = await client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                    )
                    if errors := answer.get("Errors"):
                        raise StorageError(
                            f"S3 refused to delete {len(errors)} objects under {prefix!r}: "
                            f"{errors[0].get('Code')} {errors[0].get('Message')}"
                        )
                    count += len(batch)
        return count

    # -- health -------------------------------------------------------------------------------
    async def check(self) -> None:
        """The bucket exists and these credentials may use it."""
        client = await self._s3()
        with _storage_errors(f"S3 bucket {self.bucket!r} is not usable"):
            await client.head_bucket(Bucket=self.bucket)


class _Multipart:
    """One multipart upload: parts are sent as they fill, completed or aborted once."""

    def __init__(self, client: S3Client, bucket: str, key: str, upload_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._parts: list[CompletedPartTypeDef] = []

    @classmethod
    async def start(cls, client: S3Client, bucket: str, key: str) -> _Multipart:
        with _storage_errors(f"writing {key!r}"):
            created = await client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType=content_type_for(key)
            )
        return cls(client, bucket, key, created["UploadId"])

    async def send(self, data: bytes) -> None:
        number = len(self._parts) + 1
        with _storage_errors(f"writing {self._key!r} (part {number})"):
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> None:
        with _storage_errors(f"writing {self._key!r}"):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )

    async def abort(self) -> None:
        # Best effort: a lifecycle rule (README, S3) reaps what a crash leaves behind.
        with suppress(ClientError, BotoCoreError, OSError):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )


@contextmanager
def _storage_errors(what: str, *, missing_key: str | None = None) -> Iterator[None]:
    """S3 and transport failures as domain errors: a missing ``missing_key`` is
    ``SourceNotFound``, anything else ``StorageError`` (503)."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if missing_key is not None and code in _MISSING:
            raise SourceNotFound(f"no object at {missing_key!r}") from exc
        message = f"{what}: S3 answered {code} {error.get('Message', '')}"
        raise StorageError(message.strip()) from exc
    except (BotoCoreError, OSError) as exc:
        # The transport's own words name the store's internal address: for the log, not the
        # client (whose 503 says only what failed).
        log.warning("storage_unreachable", operation=what, error=str(exc))
        raise StorageError(f"{what}: the object store did not answer") from exc


def _sweep_copies(temp_dir: Path, cutoff: float) -> list[ScratchFile]:
    try:
        with os.scandir(temp_dir) as listing:
            copies = [
                Path(entry.path)
                for entry in listing
                if entry.name.startswith(_COPY_PREFIX) and entry.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return []
    removed: list[ScratchFile] = []
    for directory in copies:
        try:
            newest, size = _newest_write_and_size(directory)
            if newest >= cutoff:
                continue
            shutil.rmtree(directory)
        except FileNotFoundError:  # removed meanwhile (its copy ended, or another sweep)
            continue
        except OSError as exc:  # one copy we may not remove must not keep the rest
            log.warning("scratch_not_removed", path=str(directory), error=str(exc))
            continue
        removed.append(
            ScratchFile(
                path=str(directory),
                size_bytes=size,
                modified_at=datetime.fromtimestamp(newest, UTC),
            )
        )
    return removed


def _newest_write_and_size(directory: Path) -> tuple[float, int]:
    """The latest mtime of the directory and everything in it, and its files' bytes."""
    newest = directory.lstat().st_mtime
    size = 0
    for parent, names, files in os.walk(directory):
        for name in names + files:
            info = os.lstat(os.path.join(parent, name))
            newest = max(newest, info.st_mtime)
            if stat.S_ISREG(info.st_mode):
                size += info.st_size
    return newest, size


def _write_and_observe(
    handle: BinaryIO, chunk: bytes, observe: Callable[[bytes], object] | None
) -> None:
    """One thread hop per chunk for both (file writes and hashlib release the GIL)."""
    handle.write(chunk)
    if observe is not None:
        observe(chunk)


def _tail_key(key: str, number: int) -> str:
    return f"{RESUMABLE_TAILS}{key}/{number}"


def _parse_session(session: str) -> tuple[int, str]:
    part_size, _, upload_id = session.partition(":")
    if not part_size.isdigit() or not upload_id:
        raise StorageError(f"{session!r} is not a resumable S3 write")
    return int(part_size), upload_id


def _base64_sha256(hex_digest: str) -> str:
    """S3 carries checksums as base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _full_object_sha256(checksum: str | None, checksum_type: str | None) -> str | None:
    """The hex sha256 of the whole object when S3 reports one; a multipart upload's composite
    checksum (``…-N``, a hash of the parts' hashes) is not the object's and is dropped."""
    if not checksum or "-" in checksum or checksum_type == "COMPOSITE":
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None
