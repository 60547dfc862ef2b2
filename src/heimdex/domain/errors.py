"""Domain errors. Each class carries a stable machine ``code``; the HTTP layer maps classes to
statuses in one place, the CLI prints the message. Codes never change once published."""

from __future__ import annotations

from typing import Any, ClassVar


class HeimdexError(Exception):
    """Base of every error Heimdex raises on purpose."""

    code: ClassVar[str] = "heimdex_error"
    title: ClassVar[str] = "Heimdex error"
    #: A dependency that comes back by itself (a database or Redis restarting, a store's
    #: hiccup): worth trying again. Misconfiguration and bad input never are.
    transient: ClassVar[bool] = False

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidInput(HeimdexError):
    code = "invalid_request"
    title = "The request is not valid"


class InvalidMedia(HeimdexError):
    """The file is not media any prober can read (empty, truncated, text, refused format…)."""

    code = "invalid_media"
    title = "The file is not readable media"


class ProbeTimeout(InvalidMedia):
    """Probing took longer than allowed: treated as hostile or broken media."""

    code = "probe_timeout"
    title = "Probing the file timed out"


class ProberUnavailable(HeimdexError):
    """The prober cannot run at all (binary missing, library broken): the server's fault."""

    code = "prober_unavailable"
    title = "The media prober is unavailable"


class SourceUriForbidden(HeimdexError):
    code = "source_uri_forbidden"
    title = "The source URI is not one of yours"


class NotFound(HeimdexError):
    """Missing, or belonging to another organisation: the two are indistinguishable on purpose."""

    code = "not_found"
    title = "Not found"


class SourceNotFound(NotFound):
    code = "source_not_found"
    title = "The source object does not exist"


class OrgMismatch(HeimdexError):
    code = "org_mismatch"
    title = "The body names another organisation than the token"


class Unauthenticated(HeimdexError):
    code = "unauthenticated"
    title = "Authentication required"


class InsufficientScope(HeimdexError):
    code = "insufficient_scope"
    title = "The token lacks a required scope"


class UploadTooLarge(HeimdexError):
    code = "upload_too_large"
    title = "The upload is larger than allowed"


class LimitExceeded(HeimdexError):
    """A per-organisation limit refused the request. ``retry_after`` (seconds, in ``extra``)
    says when trying again can succeed; a quota only freeing space lifts has none."""

    code = "limit_exceeded"
    title = "A limit of the organisation was reached"

    @property
    def retry_after(self) -> int | None:
        value = self.extra.get("retry_after")
        return int(value) if value is not None else None


class RateLimited(LimitExceeded):
    code = "rate_limited"
    title = "Too many requests"


class JobQuotaExceeded(LimitExceeded):
    code = "job_quota_exceeded"
    title = "Too many jobs queued or running"


class StorageQuotaExceeded(LimitExceeded):
    code = "storage_quota_exceeded"
    title = "The organisation's storage quota is used up"


class ProbeBusy(LimitExceeded):
    """The organisation already runs as many probes as it may at once
    (``HEIMDEX_PROBE_MAX_PER_ORG``) and no slot came free within ``HEIMDEX_PROBE_WAIT_SECONDS``.
    Worth trying again after ``retry_after`` seconds."""

    code = "probe_busy"
    title = "The organisation's probes are all running"
    #: what the cap counts, as its refusal says it
    work = "probe(s)"


class SearchImagesBusy(ProbeBusy):
    """The organisation already has as many search images decoding as it may at once (the
    probe cap, ``HEIMDEX_PROBE_MAX_PER_ORG``, in the search images' own pool). Worth trying
    again after ``retry_after`` seconds."""

    code = "search_busy"
    title = "The organisation's image searches are all running"
    work = "image search(es)"


class DatabaseBusy(LimitExceeded):
    """The organisation already holds its share of the database connections
    (``HEIMDEX_DATABASE_ORG_SHARE`` of a pool) and none of its own came free within
    ``HEIMDEX_DATABASE_ORG_WAIT_SECONDS``. Its own load, not the service's: worth trying again
    after ``retry_after`` seconds, with fewer requests at once."""

    code = "database_busy"
    title = "The organisation holds its share of the database connections"


class UnsupportedMediaType(HeimdexError):
    code = "unsupported_media_type"
    title = "The content type is not video or audio"


class StorageError(HeimdexError):
    code = "storage_error"
    title = "The storage backend failed"
    transient = True


class InvalidStorageKey(HeimdexError):
    code = "invalid_storage_key"
    title = "The storage key is not valid"


class QueueUnavailable(HeimdexError):
    code = "queue_unavailable"
    title = "The job queue is not available"
    transient = True


class QueueMisconfigured(HeimdexError):
    """Redis is set up so that queued jobs could be lost (an eviction policy other than
    ``noeviction``, results that never expire)."""

    code = "queue_misconfigured"
    title = "The job queue's Redis is misconfigured"


class DatabaseUnavailable(HeimdexError):
    code = "database_unavailable"
    title = "The database is not available"
    transient = True


class Conflict(HeimdexError):
    code = "conflict"
    title = "The request conflicts with the resource's state"


class Gone(HeimdexError):
    code = "gone"
    title = "The resource is no longer available"


class InvalidJobTransition(Conflict):
    """A job was asked to change in a way its status does not allow (succeed while queued,
    be claimed while another worker's lease holds): a bug in the caller, never the client's."""

    code = "invalid_job_transition"
    title = "The job cannot change that way now"


class UploadExpired(Gone):
    code = "upload_expired"
    title = "The upload slot has expired"


class UploadAlreadyReceived(Conflict):
    code = "upload_already_received"
    title = "The upload slot already holds a file"


class UploadInProgress(Conflict):
    code = "upload_in_progress"
    title = "Another upload into this slot is still running"


class UploadNotReceived(Conflict):
    code = "upload_not_received"
    title = "Nothing has been uploaded into this slot yet"


class UploadOffsetMismatch(Conflict):
    """A tus PATCH whose ``Upload-Offset`` is not the slot's offset (HEAD tells it)."""

    code = "upload_offset_mismatch"
    title = "Upload-Offset is not the upload's offset"


class NotResumable(Conflict):
    """A tus request for a slot made for one PUT, or a PUT into a resumable slot."""

    code = "upload_not_resumable"
    title = "The slot is not filled that way"


class MultipartUnsupported(InvalidInput):
    """``multipart`` asked of a store without presigned multipart uploads (local storage), or
    together with ``resumable``."""

    code = "multipart_unsupported"
    title = "Multipart uploads are not available for this request"


class UploadPartsMissing(Conflict):
    """Commit of a multipart slot whose parts are not all there (or an ETag is not the part's):
    the multipart upload stays open until the slot expires, so the client may PUT the missing
    parts and commit again."""

    code = "upload_parts_missing"
    title = "Parts of the multipart upload are missing"


class ChunkChecksumMismatch(HeimdexError):
    """A tus PATCH whose body does not match its ``Upload-Checksum``: the chunk is discarded."""

    code = "chunk_checksum_mismatch"
    title = "The chunk does not match Upload-Checksum"


class TusVersionUnsupported(HeimdexError):
    code = "tus_version_unsupported"
    title = "The Tus-Resumable version is not supported"


class TusHeaderInvalid(InvalidInput):
    code = "invalid_tus_header"
    title = "A tus header is missing or not valid"


class ChecksumAlgorithmUnsupported(InvalidInput):
    code = "checksum_algorithm_unsupported"
    title = "The Upload-Checksum algorithm is not supported"


class ChunkContentTypeInvalid(HeimdexError):
    code = "patch_content_type_invalid"
    title = "A tus PATCH must be application/offset+octet-stream"


class TooManyResumableUploads(LimitExceeded):
    """The organisation holds as many unfinished resumable uploads as it may
    (``HEIMDEX_LIMIT_ORG_MAX_RESUMABLE_UPLOADS``): finish or terminate one first."""

    code = "too_many_resumable_uploads"
    title = "Too many unfinished resumable uploads"


class LengthMismatch(HeimdexError):
    code = "length_mismatch"
    title = "The body is shorter than the declared content length"


class PartialUploadUnsupported(InvalidInput):
    """A PUT with ``Content-Range``: a part of the file, which this server would otherwise store
    as the whole of it (RFC 9110 §14.5: such a PUT must then be refused with 400)."""

    code = "content_range_unsupported"
    title = "Partial uploads (Content-Range) are not supported"


class ChecksumMismatch(HeimdexError):
    code = "checksum_mismatch"
    title = "The body's sha256 is not the declared one"


class InvalidIdempotencyKey(InvalidInput):
    code = "invalid_idempotency_key"
    title = "The Idempotency-Key header is not valid"


class IdempotencyKeyReused(HeimdexError):
    code = "idempotency_key_reused"
    title = "The Idempotency-Key was used with another request"


class IdempotencyKeyInFlight(Conflict):
    code = "idempotency_key_in_flight"
    title = "A request with this Idempotency-Key is still running"


class InvalidUploadSignature(Unauthenticated):
    code = "invalid_upload_signature"
    title = "The upload URL's signature is not valid"


class TenancyUnsafe(HeimdexError):
    """The database lets the service see other organisations' rows (misconfigured roles/RLS)."""

    code = "tenancy_unsafe"
    title = "Tenant isolation is not enforced by the database"


class DecoderCrashed(InvalidMedia):
    """The decoder died on this file (e.g. SIGSEGV on a corrupt stream); the worker lives on."""

    code = "decoder_crashed"
    title = "The decoder crashed on this file"


class SidecarNotReady(NotFound):
    code = "sidecar_not_ready"
    title = "The sidecar has not been generated yet"


class NoStoryboard(NotFound):
    """The sidecar has no storyboard: asked for with ``storyboard: false``, or made before
    storyboards were."""

    code = "no_storyboard"
    title = "The asset has no storyboard"


class NoVideo(Conflict):
    """A picture of the video was asked for, and the asset has no video stream."""

    code = "no_video"
    title = "The asset has no video"


class TimeOutOfRange(HeimdexError):
    """A time in the video outside ``[0, duration]``."""

    code = "time_out_of_range"
    title = "The time is outside the video"


class AssetGone(HeimdexError):
    """The job's asset was deleted before the job ran."""

    code = "asset_gone"
    title = "The asset no longer exists"


class InvalidUrlSignature(Unauthenticated):
    code = "invalid_signature"
    title = "The URL's signature is not valid"


class UrlExpired(Gone):
    code = "url_expired"
    title = "The signed URL has expired"


class ThumbnailTimeout(InvalidMedia):
    """Making the thumbnails took longer than allowed: treated as hostile or broken media."""

    code = "thumbnail_timeout"
    title = "Making thumbnails timed out"


class ThumbnailerUnavailable(HeimdexError):
    """The thumbnailer cannot run at all (binary missing, decode workers will not start): the
    server's fault, so a job retries rather than failing the asset."""

    code = "thumbnailer_unavailable"
    title = "The thumbnailer is unavailable"


class DecodersBusy(HeimdexError):
    """Every decode worker stayed busy for longer than a call may wait for one
    (``HEIMDEX_DECODE_WAIT_SECONDS``): the server is overloaded, not the file at fault."""

    code = "decoders_busy"
    title = "Every decoder is busy"
    transient = True


class MetadataTooLarge(InvalidMedia):
    """The file carries more metadata (entries or bytes) than a file may
    (``HEIMDEX_PROBE_MAX_METADATA_ENTRIES``, ``HEIMDEX_PROBE_MAX_METADATA_BYTES``): FFmpeg's
    metadata parsing is quadratic, so tens of thousands of tags cost seconds of CPU. Refused
    from the container's header before FFmpeg parses them."""

    code = "metadata_too_large"
    title = "The media carries more metadata than allowed"


class MediaTooLarge(InvalidMedia):
    """A video frame larger than the decoders may allocate (``HEIMDEX_DECODE_MAX_PIXELS``): a
    tiny file declaring a huge picture is a decompression bomb, refused before any decoding."""

    code = "media_too_large"
    title = "The media's frames are larger than allowed"


class DecodeLimitExceeded(InvalidMedia):
    """Decoding this file hit one of the decode processes' resource limits. A property of the
    file, not of the moment: a job fails at once rather than retrying."""

    code = "decode_limit_exceeded"
    title = "Decoding the file exceeded a resource limit"


class DecodeMemoryExceeded(DecodeLimitExceeded):
    code = "decode_memory_exceeded"
    title = "Decoding the file needed more memory than allowed"


class DecodeCpuExceeded(DecodeLimitExceeded):
    code = "decode_cpu_exceeded"
    title = "Decoding the file needed more CPU time than allowed"


class DecodeFileSizeExceeded(DecodeLimitExceeded):
    code = "decode_file_size_exceeded"
    title = "The decoder tried to write a file larger than allowed"


class TooManyStreams(InvalidMedia):
    """More streams than a file may have (``HEIMDEX_DECODE_MAX_STREAMS``)."""

    code = "too_many_streams"
    title = "The media has more streams than allowed"


class NulCharacter(InvalidInput):
    """A NUL character (U+0000) in a path, query, header or JSON string: no text Heimdex
    stores may hold one (PostgreSQL's text types cannot), so it is refused at the door."""

    code = "nul_character"
    title = "The request carries a NUL character"


class JsonTooDeep(InvalidInput):
    """A JSON body nested deeper than any document of this API (``MAX_JSON_DEPTH``)."""

    code = "json_too_deep"
    title = "The JSON body is nested too deeply"


class TimestampOutOfRange(InvalidInput):
    """A date-time whose offset moves it past year 1 or year 9999 once converted to UTC."""

    code = "timestamp_out_of_range"
    title = "The date-time is out of range"


class WebhookUrlForbidden(HeimdexError):
    """A webhook URL Heimdex will not send to: not https (in production), or an address on
    the operator's own networks (loopback, private, link-local, metadata…)."""

    code = "webhook_url_forbidden"
    title = "The webhook URL is not allowed"


class InvalidImage(HeimdexError):
    """A search image that is not one picture Heimdex can read (empty, not an image, an
    unsupported format)."""

    code = "invalid_image"
    title = "The image is not readable"


class AnimatedImage(InvalidImage):
    """A search image with more than one frame: which frame is meant is not clear."""

    code = "animated_image"
    title = "The image is animated"


class ImageTooLarge(InvalidImage):
    """A search image over the byte limit, or declaring more pixels than the decoders may
    allocate (``HEIMDEX_DECODE_MAX_PIXELS``): a decompression bomb is refused unread."""

    code = "image_too_large"
    title = "The image is larger than allowed"


class SemanticSearchUnavailable(HeimdexError):
    """Search by text needs a text model, which this Heimdex does not have yet."""

    code = "semantic_search_unavailable"
    title = "Search by text is not available"


class FramesNotReady(Conflict):
    """A search from an asset with no fingerprinted frame: its sidecar job has not run yet
    (or ran before fingerprints existed: ``heimdex reindex``), or every frame was dull."""

    code = "frames_not_ready"
    title = "The asset has no fingerprinted frames yet"
