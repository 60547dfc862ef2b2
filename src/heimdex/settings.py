"""Configuration: ``HEIMDEX_*`` environment variables (and a ``.env`` file), parsed once.

With nothing set, Heimdex runs on the embedded default: a SQLite file and local storage under the
data directory, in-process jobs, the PyAV prober. Every bad value is reported at start-up as one
line naming its variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec

PREFIX = "HEIMDEX_"
DEVELOPMENT_SECRET = "change-me"  # noqa: S105 - the seed's default; accepted only in development
MIN_PRODUCTION_SECRET_BYTES = 32


class SettingsError(Exception):
    """One or more settings are invalid; ``problems`` holds one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Typed configuration. Field ``x`` is read from ``HEIMDEX_X``."""

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str | None = None
    migration_database_url: str | None = None
    migrations_dir: Path | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_queue_name: str = "heimdex:jobs"
    storage_backend: Literal["local", "s3"] = "local"
    storage_root: Path | None = None
    derived_root: Path | None = None
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    job_queue_backend: Literal["immediate", "redis"] = "immediate"
    jwt_secret: str = DEVELOPMENT_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_leeway_seconds: float = 30.0
    max_upload_size_bytes: int = 536_870_912
    max_json_body_bytes: int = 65_536
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 60
    rate_limit_backend: Literal["auto", "memory", "redis"] = "auto"
    org_storage_quota_bytes: int = 0
    org_max_active_jobs: int = 0
    upload_url_ttl_seconds: int = 3600
    upload_stall_seconds: int = 3600
    public_url: str | None = None
    idempotency_ttl_seconds: int = 86_400
    idempotency_lease_seconds: int = 120
    enable_legacy: bool = False
    prober: Literal["pyav", "ffprobe"] = "pyav"
    ffprobe_path: str = "ffprobe"
    probe_timeout_seconds: float = 30.0
    probe_workers: int = 2
    probe_worker_wait_seconds: float = 10.0
    probe_max_per_org: int = 1
    probe_wait_seconds: float = 5.0
    thumbnailer: Literal["pyav", "ffmpeg"] = "pyav"
    ffmpeg_path: str = "ffmpeg"
    thumbnail_timeout_seconds: float = 60.0
    decode_workers: int = 2
    decode_memory_limit_bytes: int = 4 << 30
    decode_cpu_limit_seconds: int = 120
    decode_file_size_limit_bytes: int = 16 << 20
    decode_niceness: int = 10
    decode_max_pixels: int = 8192 * 8192
    decode_max_streams: int = 256
    decode_max_metadata_entries: int = 4096
    decode_max_metadata_bytes: int = 16 << 20
    job_max_attempts: int = 3
    job_lease_seconds: int = 60
    job_retry_base_seconds: float = 5.0
    job_redeliver_seconds: float = 120.0
    upload_abandon_after_seconds: float = 86400.0
    scratch_max_age_seconds: float = 86400.0
    derived_sweep_interval_seconds: float = 3600.0
    sweep_interval_seconds: float = 5.0
    download_url_ttl_seconds: int = 3600
    host: str = "127.0.0.1"
    port: int = 8000
    http_max_header_bytes: int = 65_536
    http_header_timeout_seconds: float = 10.0
    http_keep_alive_seconds: float = 5.0
    http_max_connections: int = 4096
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_token: str | None = None
    worker_metrics_port: int = 0
    webhook_allow_private_networks: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 16
    webhook_endpoint_concurrency: int = 2
    webhook_secret_grace_seconds: int = 86_400
    webhook_disable_after_seconds: float = 5 * 86_400.0

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'heimdex.db').resolve()}"

    @property
    def resolved_migration_database_url(self) -> str:
        return self.migration_database_url or self.resolved_database_url

    @property
    def resolved_storage_root(self) -> Path:
        return (self.storage_root or self.data_dir / "storage").resolve()

    @property
    def uses_development_secret(self) -> bool:
        return self.jwt_secret == DEVELOPMENT_SECRET

    @property
    def resolved_rate_limit_backend(self) -> Literal["memory", "redis"]:
        """``auto``: shared buckets in Redis when the API runs beside Redis-fed workers (and so,
        likely, as several processes), in-process ones on the embedded default."""
        if self.rate_limit_backend != "auto":
            return self.rate_limit_backend
        return "redis" if self.job_queue_backend == "redis" else "memory"


def _env_name(field: str) -> str:
    return PREFIX + field.upper()


def _field_types() -> dict[str, Any]:
    hints = get_type_hints(Settings)
    return {name: hints[name] for name in Settings.__struct_fields__}


def _parse(raw: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field, annotation in _field_types().items():
        name = _env_name(field)
        if name not in raw:
            continue
        text = raw[name].strip()
        if Path in (annotation, *get_args(annotation)):  # msgspec has no Path type
            if text:
                values[field] = Path(text).expanduser()
            elif type(None) in get_args(annotation):
                values[field] = None
            else:
                problems.append(f"{name} is empty: must be a path")
            continue
        try:
            values[field] = msgspec.convert(text, annotation, strict=False)
        except msgspec.ValidationError:
            problems.append(f"{name}={text!r}: {_expected(annotation)}")
    return values, problems


def _expected(annotation: Any) -> str:
    """Say what the variable accepts, in the words of someone editing a ``.env`` file."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return "must be one of " + ", ".join(repr(a) for a in args)
    if args:  # an Optional[...]
        return _expected(args[0])
    return {
        bool: "must be true or false",
        int: "must be a whole number",
        float: "must be a number",
    }.get(annotation, "is not valid")


# Text settings that mean nothing empty. Secrets first: an empty HEIMDEX_JWT_SECRET would start
# and then fail every request; an empty HEIMDEX_METRICS_TOKEN would leave /metrics open to anyone
# while its operator believes it closed (unset it for that).
_REQUIRED_TEXT = (
    "jwt_secret",
    "redis_url",
    "redis_queue_name",
    "ffprobe_path",
    "ffmpeg_path",
    "host",
)
_SECRETS_UNSET_NOT_EMPTY = ("metrics_token",)


def _check_text(settings: Settings) -> list[str]:
    """Refuse text settings that are empty or only whitespace (set directly or in the
    environment, where they are stripped), naming the variable."""
    problems: list[str] = []
    for name in _REQUIRED_TEXT:
        if not getattr(settings, name).strip():
            problems.append(f"{_env_name(name)} is empty: it must have a value")
    for name in _SECRETS_UNSET_NOT_EMPTY:
        value = getattr(settings, name)
        if value is not None and not value.strip():
            problems.append(f"{_env_name(name)} is empty: set a value, or unset it")
    return problems


def _check(settings: Settings) -> list[str]:
    problems = _check_text(settings)
    if settings.max_upload_size_bytes <= 0:
        problems.append("HEIMDEX_MAX_UPLOAD_SIZE_BYTES must be a positive number of bytes")
    for name in (
        "thumbnail_timeout_seconds",
        "decode_workers",
        "probe_workers",
        "probe_worker_wait_seconds",
        "job_max_attempts",
        "job_lease_seconds",
        "job_retry_base_seconds",
        "job_redeliver_seconds",
        "upload_abandon_after_seconds",
        "scratch_max_age_seconds",
        "derived_sweep_interval_seconds",
        "sweep_interval_seconds",
        "download_url_ttl_seconds",
        "upload_url_ttl_seconds",
        "upload_stall_seconds",
        "idempotency_ttl_seconds",
        "idempotency_lease_seconds",
        "max_json_body_bytes",
        "rate_limit_burst",
        "http_max_header_bytes",
        "http_header_timeout_seconds",
        "http_keep_alive_seconds",
        "http_max_connections",
        "webhook_timeout_seconds",
        "webhook_concurrency",
        "webhook_endpoint_concurrency",
        "webhook_disable_after_seconds",
    ):
        if getattr(settings, name) <= 0:
            problems.append(f"{_env_name(name)} must be positive")
    for name in (
        "rate_limit_per_second",
        "org_storage_quota_bytes",
        "org_max_active_jobs",
        "probe_max_per_org",
    ):
        if getattr(settings, name) < 0:
            problems.append(f"{_env_name(name)} must not be negative (0: no limit)")
    if settings.public_url is not None and not settings.public_url.startswith(
        ("http://", "https://")
    ):
        problems.append(f"HEIMDEX_PUBLIC_URL={settings.public_url!r}: must start with http(s)://")
    if settings.scratch_max_age_seconds < max(
        settings.upload_stall_seconds,
        settings.probe_timeout_seconds,
        settings.thumbnail_timeout_seconds,
    ):
        # Never sweep what a running request holds: a PUT counts as alive until it stalls, a
        # copy being probed or thumbnailed until its timeout; either may write nothing meanwhile.
        problems.append(
            "HEIMDEX_SCRATCH_MAX_AGE_SECONDS must be at least HEIMDEX_UPLOAD_STALL_SECONDS, "
            "HEIMDEX_PROBE_TIMEOUT_SECONDS and HEIMDEX_THUMBNAIL_TIMEOUT_SECONDS"
        )
    if settings.probe_timeout_seconds <= 0:
        problems.append("HEIMDEX_PROBE_TIMEOUT_SECONDS must be positive")
    if settings.probe_wait_seconds < 0:
        problems.append("HEIMDEX_PROBE_WAIT_SECONDS must not be negative (0: do not wait)")
    for name in (
        "decode_memory_limit_bytes",
        "decode_cpu_limit_seconds",
        "decode_file_size_limit_bytes",
        "decode_max_pixels",
        "decode_max_streams",
        "decode_max_metadata_entries",
        "decode_max_metadata_bytes",
    ):
        if getattr(settings, name) < 0:
            problems.append(f"{_env_name(name)} must not be negative (0: no limit)")
    if not 0 <= settings.decode_niceness <= 19:
        problems.append(
            f"HEIMDEX_DECODE_NICENESS={settings.decode_niceness}: must be between 0 and 19"
        )
    if settings.webhook_secret_grace_seconds < 0:
        problems.append("HEIMDEX_WEBHOOK_SECRET_GRACE_SECONDS must not be negative")
    if settings.webhook_endpoint_concurrency > settings.webhook_concurrency:
        problems.append(
            "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY must be at most HEIMDEX_WEBHOOK_CONCURRENCY"
        )
    if settings.jwt_leeway_seconds < 0:
        problems.append("HEIMDEX_JWT_LEEWAY_SECONDS must not be negative")
    if not 0 < settings.port < 65536:
        problems.append(f"HEIMDEX_PORT={settings.port}: must be between 1 and 65535")
    if not 0 <= settings.worker_metrics_port < 65536:
        problems.append(
            f"HEIMDEX_WORKER_METRICS_PORT={settings.worker_metrics_port}: must be between 1 and "
            "65535 (or 0: off)"
        )
    if settings.is_production:
        if settings.uses_development_secret:
            problems.append(
                "HEIMDEX_JWT_SECRET: the development default 'change-me' is refused in production"
            )
        elif settings.jwt_secret.strip() and (
            len(settings.jwt_secret.encode()) < MIN_PRODUCTION_SECRET_BYTES
        ):
            problems.append(
                f"HEIMDEX_JWT_SECRET: must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes in "
                "production"
            )
    if settings.storage_backend == "s3":
        problems.extend(_check_s3(settings))
    return problems


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # fullmatch: "$" passes a "\n"
# SigV4 presigned URLs live at most seven days.
MAX_PRESIGNED_URL_SECONDS = 7 * 24 * 3600


def _check_s3(settings: Settings) -> list[str]:
    problems: list[str] = []
    if not settings.s3_bucket:
        problems.append("HEIMDEX_S3_BUCKET is required when HEIMDEX_STORAGE_BACKEND=s3")
    elif not _S3_BUCKET.fullmatch(settings.s3_bucket) or ".." in settings.s3_bucket:
        problems.append(
            f"HEIMDEX_S3_BUCKET={settings.s3_bucket!r}: not a valid bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    for name in ("s3_endpoint_url", "s3_public_endpoint_url"):
        value = getattr(settings, name)
        if value and not value.startswith(("http://", "https://")):  # empty means unset
            problems.append(f"{_env_name(name)}={value!r}: must start with http(s)://")
    for name in ("upload_url_ttl_seconds", "download_url_ttl_seconds"):
        if getattr(settings, name) > MAX_PRESIGNED_URL_SECONDS:
            problems.append(
                f"{_env_name(name)} must be at most {MAX_PRESIGNED_URL_SECONDS} (7 days) with S3: "
                "a presigned URL lives no longer"
            )
    return problems


#: what configures a client of Heimdex (``heimdex ingest --api``), not the service itself
CLIENT_VARIABLES = frozenset({"HEIMDEX_API_URL", "HEIMDEX_TOKEN"})


def unknown_variables(raw: Mapping[str, str]) -> list[str]:
    """``HEIMDEX_*`` names that configure nothing — most likely typos worth a warning."""
    known = {_env_name(f) for f in Settings.__struct_fields__} | CLIENT_VARIABLES
    return sorted(k for k in raw if k.startswith(PREFIX) and k not in known)


def read_environment(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> dict[str, str]:
    """The ``HEIMDEX_*`` variables: the process environment wins over the ``.env`` file."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        from dotenv import dotenv_values  # only when there is a file: it slows every start-up

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return {k: v for k, v in merged.items() if k.startswith(PREFIX)}


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Parse and validate the configuration; raise ``SettingsError`` listing every bad value."""
    raw = read_environment(environ, env_file)
    values, problems = _parse(raw)
    if problems:
        raise SettingsError(problems)
    settings = Settings(**values)
    problems = _check(settings)
    if problems:
        raise SettingsError(problems)
    return settings
