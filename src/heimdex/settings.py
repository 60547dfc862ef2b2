"""Configuration: ``HEIMDEX_*`` environment variables (and a ``.env`` file), parsed once.

With nothing set, Heimdex runs on the embedded default: a SQLite file and local storage under the
data directory, in-process jobs, the PyAV prober. Every bad value is reported at start-up as one
line naming its variable.

``Settings`` is made of sections (``settings.http.port``, ``settings.decode.workers``, …). A
section's field ``x`` is read from ``HEIMDEX_`` + the section's ``env_prefix`` + ``X``, unless the
field declares its variable with ``Env("HEIMDEX_…")``; a field's range is declared on it with
``msgspec.Meta`` (``Positive``, ``NoLimitIfZero``, ``Meta(ge=…, le=…)``, ``Required``). Checks
that span fields stay in ``_check``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    get_args,
    get_origin,
    get_type_hints,
)

import msgspec

PREFIX = "HEIMDEX_"
DEVELOPMENT_SECRET = "change-me"  # noqa: S105 - the seed's default; accepted only in development
MIN_PRODUCTION_SECRET_BYTES = 32
# SigV4 presigned URLs live at most seven days.
MAX_PRESIGNED_URL_SECONDS = 7 * 24 * 3600


class SettingsError(Exception):
    """One or more settings are invalid; ``problems`` holds one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class Env(NamedTuple):
    """The variable a field is read from, when its section's prefix + its name is not it."""

    name: str


# Constraints, declared on the fields and checked by ``load_settings`` (a description is the note in
# the error's parentheses).
Positive = msgspec.Meta(gt=0)
NotNegative = msgspec.Meta(ge=0)
NoLimitIfZero = msgspec.Meta(ge=0, description="0: no limit")
# Text that means nothing empty (values from the environment are stripped first).
Required = msgspec.Meta(min_length=1)


class Section(msgspec.Struct, frozen=True, kw_only=True):
    """A group of settings; field ``x`` is read from ``HEIMDEX_{env_prefix}X``."""

    env_prefix: ClassVar[str] = ""


class DatabaseSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "DATABASE_"

    url: str | None = None
    migration_url: Annotated[str | None, Env("HEIMDEX_MIGRATION_DATABASE_URL")] = None
    migrations_dir: Annotated[Path | None, Env("HEIMDEX_MIGRATIONS_DIR")] = None
    #: connections of each API process's read pool (PostgreSQL): about its concurrent reads
    read_pool_size: Annotated[int, Positive] = 20
    #: the fraction of each pool (the read pool, the unit-of-work pool) one organisation's
    #: requests may hold at once, so the rest stays open to the others; 0: no share
    org_share: Annotated[float, msgspec.Meta(ge=0, le=1, description="0: no share")] = 0.5
    #: longest a request past its organisation's share waits for a connection; then 429
    org_wait_seconds: Annotated[float, msgspec.Meta(ge=0, description="0: do not wait")] = 10.0


class RedisSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "REDIS_"

    url: Annotated[str, Required] = "redis://127.0.0.1:6379/0"
    queue_name: Annotated[str, Required] = "heimdex:jobs"
    #: a message a worker read and stopped renewing (it died) is taken over after this long;
    #: unset: twice HEIMDEX_JOB_LEASE_SECONDS
    claim_idle_seconds: Annotated[float | None, Positive] = None


class StorageSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "STORAGE_"

    backend: Literal["local", "s3"] = "local"
    root: Path | None = None
    derived_root: Annotated[Path | None, Env("HEIMDEX_DERIVED_ROOT")] = None
    download_url_ttl_seconds: Annotated[int, Positive, Env("HEIMDEX_DOWNLOAD_URL_TTL_SECONDS")] = (
        3600
    )


class S3Settings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "S3_"

    bucket: str | None = None
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"


class JwtSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "JWT_"

    secret: Annotated[str, Required] = DEVELOPMENT_SECRET
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    leeway_seconds: Annotated[float, NotNegative] = 30.0
    #: verified tokens remembered until their exp (0: verify every request)
    cache_size: Annotated[int, NotNegative] = 4096


class UploadSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "UPLOAD_"

    max_size_bytes: Annotated[int, Positive, Env("HEIMDEX_MAX_UPLOAD_SIZE_BYTES")] = 536_870_912
    url_ttl_seconds: Annotated[int, Positive] = 3600
    stall_seconds: Annotated[int, Positive] = 3600
    abandon_after_seconds: Annotated[float, Positive] = 86400.0
    #: largest resumable (tus) upload; S3 stores at most 5 TiB in one object
    resumable_max_size_bytes: Annotated[int, Positive] = 64 << 30
    #: a resumable slot expires this long after its last PATCH (``Upload-Expires``)
    resumable_ttl_seconds: Annotated[int, Positive] = 86400


class LimitSettings(Section, frozen=True, kw_only=True):
    """Limits on clients (besides the upload size)."""

    max_json_body_bytes: Annotated[int, Positive] = 65_536
    rate_limit_per_second: Annotated[float, NoLimitIfZero] = 0.0
    rate_limit_burst: Annotated[int, Positive] = 60
    rate_limit_backend: Literal["auto", "memory", "redis"] = "auto"
    org_storage_quota_bytes: Annotated[int, NoLimitIfZero] = 0
    org_max_active_jobs: Annotated[int, NoLimitIfZero] = 0
    org_max_resumable_uploads: Annotated[int, NoLimitIfZero] = 16


class IdempotencySettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "IDEMPOTENCY_"

    ttl_seconds: Annotated[int, Positive] = 86_400
    lease_seconds: Annotated[int, Positive] = 120


class ProbeSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "PROBE_"

    backend: Annotated[Literal["pyav", "ffprobe"], Env("HEIMDEX_PROBER")] = "pyav"
    ffprobe_path: Annotated[str, Required, Env("HEIMDEX_FFPROBE_PATH")] = "ffprobe"
    timeout_seconds: Annotated[float, Positive] = 30.0
    workers: Annotated[int, Positive] = 2
    worker_wait_seconds: Annotated[float, Positive] = 10.0
    max_per_org: Annotated[int, NoLimitIfZero] = 1
    wait_seconds: Annotated[float, msgspec.Meta(ge=0, description="0: do not wait")] = 5.0


class ThumbnailSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "THUMBNAIL_"

    backend: Annotated[Literal["pyav", "ffmpeg"], Env("HEIMDEX_THUMBNAILER")] = "pyav"
    ffmpeg_path: Annotated[str, Required, Env("HEIMDEX_FFMPEG_PATH")] = "ffmpeg"
    timeout_seconds: Annotated[float, Positive] = 60.0


class DecodeSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "DECODE_"

    workers: Annotated[int, Positive] = 2
    memory_limit_bytes: Annotated[int, NoLimitIfZero] = 4 << 30
    cpu_limit_seconds: Annotated[int, NoLimitIfZero] = 120
    file_size_limit_bytes: Annotated[int, NoLimitIfZero] = 16 << 20
    niceness: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    max_pixels: Annotated[int, NoLimitIfZero] = 8192 * 8192
    max_streams: Annotated[int, NoLimitIfZero] = 256
    max_metadata_entries: Annotated[int, NoLimitIfZero] = 4096
    max_metadata_bytes: Annotated[int, NoLimitIfZero] = 16 << 20


class JobSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "JOB_"

    queue_backend: Literal["immediate", "redis"] = "immediate"
    max_attempts: Annotated[int, Positive] = 3
    lease_seconds: Annotated[int, Positive] = 60
    retry_base_seconds: Annotated[float, Positive] = 5.0
    redeliver_seconds: Annotated[float, Positive] = 120.0
    sweep_interval_seconds: Annotated[float, Positive, Env("HEIMDEX_SWEEP_INTERVAL_SECONDS")] = 5.0
    # Below the supervisor's own grace (compose's stop_grace_period 30 s, Kubernetes' 30 s):
    # past it, a job is handed back, which takes a moment more, before the SIGKILL.
    worker_shutdown_grace_seconds: Annotated[
        float, NotNegative, Env("HEIMDEX_WORKER_SHUTDOWN_GRACE_SECONDS")
    ] = 20.0


class SweepSettings(Section, frozen=True, kw_only=True):
    """The sweeps of what a dead process or a gone asset left behind."""

    derived_interval_seconds: Annotated[
        float, Positive, Env("HEIMDEX_DERIVED_SWEEP_INTERVAL_SECONDS")
    ] = 3600.0
    scratch_max_age_seconds: Annotated[float, Positive] = 86400.0


class HttpSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "HTTP_"

    host: Annotated[str, Required, Env("HEIMDEX_HOST")] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535), Env("HEIMDEX_PORT")] = 8000
    max_header_bytes: Annotated[int, Positive] = 65_536
    header_timeout_seconds: Annotated[float, Positive] = 10.0
    keep_alive_seconds: Annotated[float, Positive] = 5.0
    max_connections: Annotated[int, Positive] = 4096


class LogSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "LOG_"

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class MetricsSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "METRICS_"

    # Empty, it would leave /metrics open to anyone while its operator believes it closed.
    token: Annotated[str | None, Required] = None
    worker_port: Annotated[
        int, msgspec.Meta(ge=0, le=65535, description="0: off"), Env("HEIMDEX_WORKER_METRICS_PORT")
    ] = 0


class WebhookSettings(Section, frozen=True, kw_only=True):
    env_prefix: ClassVar[str] = "WEBHOOK_"

    allow_private_networks: bool = False
    timeout_seconds: Annotated[float, Positive] = 10.0
    concurrency: Annotated[int, Positive] = 16
    endpoint_concurrency: Annotated[int, Positive] = 2
    org_concurrency: Annotated[int, Positive] = 4
    secret_grace_seconds: Annotated[int, NotNegative] = 86_400
    disable_after_seconds: Annotated[float, Positive] = 5 * 86_400.0


def _section(cls: type[Section]) -> Any:
    return msgspec.field(default_factory=cls)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Typed configuration: a few fields of its own (``HEIMDEX_X``) and sections.

    Built in code, use ``Settings.from_flat(data_dir=…, jwt_secret=…)``: each keyword is a
    variable's name without ``HEIMDEX_``, in lower case.
    """

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("data")
    public_url: str | None = None
    enable_legacy: bool = False
    database: DatabaseSettings = _section(DatabaseSettings)
    redis: RedisSettings = _section(RedisSettings)
    storage: StorageSettings = _section(StorageSettings)
    s3: S3Settings = _section(S3Settings)
    jwt: JwtSettings = _section(JwtSettings)
    uploads: UploadSettings = _section(UploadSettings)
    limits: LimitSettings = _section(LimitSettings)
    idempotency: IdempotencySettings = _section(IdempotencySettings)
    probe: ProbeSettings = _section(ProbeSettings)
    thumbnails: ThumbnailSettings = _section(ThumbnailSettings)
    decode: DecodeSettings = _section(DecodeSettings)
    jobs: JobSettings = _section(JobSettings)
    sweeps: SweepSettings = _section(SweepSettings)
    http: HttpSettings = _section(HttpSettings)
    log: LogSettings = _section(LogSettings)
    metrics: MetricsSettings = _section(MetricsSettings)
    webhooks: WebhookSettings = _section(WebhookSettings)

    @classmethod
    def from_flat(cls, **values: Any) -> Settings:
        """Settings built in code, by variable: ``from_flat(port=9000)`` sets ``HEIMDEX_PORT``.
        Values are typed, and unchecked (as any Struct built in code)."""
        return cls().replace_flat(**values)

    def replace_flat(self, **values: Any) -> Settings:
        """A copy with the named variables (as in ``from_flat``) changed."""
        known = _variables_by_flat_name()
        sections: dict[str, dict[str, Any]] = {}
        own: dict[str, Any] = {}
        for flat, value in values.items():
            if flat not in known:
                raise TypeError(f"no setting is read from {PREFIX}{flat.upper()}")
            variable = known[flat]
            target = own if variable.section is None else sections.setdefault(variable.section, {})
            target[variable.field] = value
        for section, changes in sections.items():
            own[section] = msgspec.structs.replace(getattr(self, section), **changes)
        return msgspec.structs.replace(self, **own)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def resolved_database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'heimdex.db').resolve()}"

    @property
    def resolved_migration_database_url(self) -> str:
        return self.database.migration_url or self.resolved_database_url

    @property
    def resolved_storage_root(self) -> Path:
        return (self.storage.root or self.data_dir / "storage").resolve()

    @property
    def resolved_claim_idle_seconds(self) -> float:
        """Twice the job lease unless set: a worker's claims (like its lease) are renewed every
        third of their time, so a dead worker's message lapses after its job's lease ran out
        (from 1.5 times the lease) and the worker taking it over can run the job."""
        return self.redis.claim_idle_seconds or 2.0 * self.jobs.lease_seconds

    @property
    def uses_development_secret(self) -> bool:
        return self.jwt.secret == DEVELOPMENT_SECRET

    @property
    def resolved_rate_limit_backend(self) -> Literal["memory", "redis"]:
        """``auto``: shared buckets in Redis when the API runs beside Redis-fed workers (and so,
        likely, as several processes), in-process ones on the embedded default."""
        if self.limits.rate_limit_backend != "auto":
            return self.limits.rate_limit_backend
        return "redis" if self.jobs.queue_backend == "redis" else "memory"


class Variable(NamedTuple):
    """One ``HEIMDEX_*`` variable and the field it sets."""

    name: str
    section: str | None  # the attribute of ``Settings`` holding the field; None: its own
    field: str
    annotation: Any  # the field's type, without its declarations
    constraints: tuple[msgspec.Meta, ...]

    @property
    def flat_name(self) -> str:
        return self.name.removeprefix(PREFIX).lower()

    def value(self, settings: Settings) -> Any:
        holder = settings if self.section is None else getattr(settings, self.section)
        return getattr(holder, self.field)


def _declared(owner: type[msgspec.Struct], section: str | None, prefix: str) -> list[Variable]:
    variables: list[Variable] = []
    hints = get_type_hints(owner, include_extras=True)
    for field in owner.__struct_fields__:
        annotation: Any = hints[field]
        extras: tuple[object, ...] = ()
        if get_origin(annotation) is Annotated:
            annotation, *rest = get_args(annotation)
            extras = tuple(rest)
        if isinstance(annotation, type) and issubclass(annotation, Section):
            variables.extend(_declared(annotation, field, annotation.env_prefix))
            continue
        names = [e.name for e in extras if isinstance(e, Env)]
        name = names[0] if names else PREFIX + prefix + field.upper()
        constraints = tuple(e for e in extras if isinstance(e, msgspec.Meta))
        variables.append(Variable(name, section, field, annotation, constraints))
    return variables


@functools.cache
def variables() -> tuple[Variable, ...]:
    """Every variable ``Settings`` reads, in declaration order."""
    found = tuple(_declared(Settings, None, ""))
    names = [v.name for v in found]
    if len(names) != len(set(names)):  # two fields read from one variable: a declaration slip
        raise TypeError(f"a HEIMDEX_* variable sets two fields: {sorted(names)}")
    return found


@functools.cache
def _variables_by_flat_name() -> dict[str, Variable]:
    return {v.flat_name: v for v in variables()}


def environment_variables() -> frozenset[str]:
    """The names of every ``HEIMDEX_*`` variable ``Settings`` reads."""
    return frozenset(v.name for v in variables())


def _parse(raw: Mapping[str, str]) -> tuple[Settings | None, list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for variable in variables():
        if variable.name not in raw:
            continue
        name, annotation = variable.name, variable.annotation
        text = raw[name].strip()
        if Path in (annotation, *get_args(annotation)):  # msgspec has no Path type
            if text:
                values[variable.flat_name] = Path(text).expanduser()
            elif type(None) in get_args(annotation):
                values[variable.flat_name] = None
            else:
                problems.append(f"{name} is empty: must be a path")
            continue
        try:
            values[variable.flat_name] = msgspec.convert(text, annotation, strict=False)
        except msgspec.ValidationError:
            problems.append(f"{name}={text!r}: {_expected(annotation)}")
    if problems:
        return None, problems
    return Settings.from_flat(**values), []


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


def _violation(variable: Variable, value: Any) -> str | None:
    """The problem with ``value`` against the constraints declared on its field, if any."""
    for meta in variable.constraints:
        if meta.min_length is not None and value is not None and len(value) < meta.min_length:
            if type(None) in get_args(variable.annotation):
                return f"{variable.name} is empty: set a value, or unset it"
            return f"{variable.name} is empty: it must have a value"
        if not isinstance(value, int | float):
            continue
        if (
            (meta.gt is not None and not value > meta.gt)
            or (meta.ge is not None and not value >= meta.ge)
            or (meta.lt is not None and not value < meta.lt)
            or (meta.le is not None and not value <= meta.le)
        ):
            note = f" ({meta.description})" if meta.description else ""
            return f"{variable.name}={value!r}: {_range_words(meta)}{note}"
    return None


def _range_words(meta: msgspec.Meta) -> str:
    if meta.ge is not None and meta.le is not None:
        return f"must be between {meta.ge} and {meta.le}"
    if meta.gt == 0 and meta.lt is None and meta.le is None:
        return "must be positive"
    if meta.ge == 0 and meta.lt is None and meta.le is None:
        return "must not be negative"
    bounds = [
        f"{words} {bound}"
        for words, bound in (
            ("greater than", meta.gt),
            ("at least", meta.ge),
            ("less than", meta.lt),
            ("at most", meta.le),
        )
        if bound is not None
    ]
    return "must be " + " and ".join(bounds)


def _check(settings: Settings) -> list[str]:
    """Every declared range, then what spans fields."""
    problems = [
        problem
        for variable in variables()
        if (problem := _violation(variable, variable.value(settings))) is not None
    ]
    if settings.public_url is not None and not settings.public_url.startswith(
        ("http://", "https://")
    ):
        problems.append(f"HEIMDEX_PUBLIC_URL={settings.public_url!r}: must start with http(s)://")
    if settings.sweeps.scratch_max_age_seconds < max(
        settings.uploads.stall_seconds,
        settings.probe.timeout_seconds,
        settings.thumbnails.timeout_seconds,
    ):
        # Never sweep what a running request holds: a PUT counts as alive until it stalls, a
        # copy being probed or thumbnailed until its timeout; either may write nothing meanwhile.
        problems.append(
            "HEIMDEX_SCRATCH_MAX_AGE_SECONDS must be at least HEIMDEX_UPLOAD_STALL_SECONDS, "
            "HEIMDEX_PROBE_TIMEOUT_SECONDS and HEIMDEX_THUMBNAIL_TIMEOUT_SECONDS"
        )
    if settings.is_production:
        if settings.uses_development_secret:
            problems.append(
                "HEIMDEX_JWT_SECRET: the development default 'change-me' is refused in production"
            )
        elif settings.jwt.secret.strip() and (
            len(settings.jwt.secret.encode()) < MIN_PRODUCTION_SECRET_BYTES
        ):
            problems.append(
                f"HEIMDEX_JWT_SECRET: must be at least {MIN_PRODUCTION_SECRET_BYTES} bytes in "
                "production"
            )
    if settings.webhooks.endpoint_concurrency > settings.webhooks.concurrency:
        problems.append(
            "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY must be at most HEIMDEX_WEBHOOK_CONCURRENCY"
        )
    if settings.webhooks.endpoint_concurrency > settings.webhooks.org_concurrency:
        problems.append(
            "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY must be at most HEIMDEX_WEBHOOK_ORG_CONCURRENCY"
        )
    if settings.storage.backend == "s3":
        problems.extend(_check_s3(settings))
    return problems


MAX_S3_OBJECT_BYTES = 5 << 40
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # fullmatch: "$" passes a "\n"


def _check_s3(settings: Settings) -> list[str]:
    s3 = settings.s3
    problems: list[str] = []
    if not s3.bucket:
        problems.append("HEIMDEX_S3_BUCKET is required when HEIMDEX_STORAGE_BACKEND=s3")
    elif not _S3_BUCKET.fullmatch(s3.bucket) or ".." in s3.bucket:
        problems.append(
            f"HEIMDEX_S3_BUCKET={s3.bucket!r}: not a valid bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    if settings.uploads.resumable_max_size_bytes > MAX_S3_OBJECT_BYTES:
        problems.append(
            "HEIMDEX_UPLOAD_RESUMABLE_MAX_SIZE_BYTES must be at most 5497558138880 (5 TiB) with "
            "S3: an object is no larger"
        )
    for name, url in (
        ("HEIMDEX_S3_ENDPOINT_URL", s3.endpoint_url),
        ("HEIMDEX_S3_PUBLIC_ENDPOINT_URL", s3.public_endpoint_url),
    ):
        if url and not url.startswith(("http://", "https://")):  # empty means unset
            problems.append(f"{name}={url!r}: must start with http(s)://")
    for name, seconds in (
        ("HEIMDEX_UPLOAD_URL_TTL_SECONDS", settings.uploads.url_ttl_seconds),
        ("HEIMDEX_DOWNLOAD_URL_TTL_SECONDS", settings.storage.download_url_ttl_seconds),
    ):
        if seconds > MAX_PRESIGNED_URL_SECONDS:
            problems.append(
                f"{name} must be at most {MAX_PRESIGNED_URL_SECONDS} (7 days) with S3: "
                "a presigned URL lives no longer"
            )
    return problems


#: what configures a client of Heimdex (``heimdex ingest --api``), not the service itself
CLIENT_VARIABLES = frozenset({"HEIMDEX_API_URL", "HEIMDEX_TOKEN"})


def unknown_variables(raw: Mapping[str, str]) -> list[str]:
    """``HEIMDEX_*`` names that configure nothing — most likely typos worth a warning."""
    known = environment_variables() | CLIENT_VARIABLES
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
    if not raw:
        # Nothing set: the defaults, which pass every check (tests/unit/test_settings.py). Saves
        # declaring every variable (typing's get_type_hints over each section), milliseconds
        # that `heimdex probe` would pay on each start.
        return Settings()
    settings, problems = _parse(raw)
    if settings is None:
        raise SettingsError(problems)
    problems = _check(settings)
    if problems:
        raise SettingsError(problems)
    return settings
