from __future__ import annotations

from pathlib import Path

import pytest

from heimdex.adapters.media.pyav import PyAVProber
from heimdex.bootstrap_media import build_prober, decode_limits
from heimdex.settings import (
    Settings,
    SettingsError,
    environment_variables,
    load_settings,
    unknown_variables,
    variables,
)


def test_no_variables_gives_the_embedded_default(tmp_path: Path) -> None:
    settings = load_settings({}, env_file=None)
    assert settings.env == "development"
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_database_url.endswith("/data/heimdex.db")
    assert settings.storage.backend == "local"
    assert settings.jobs.queue_backend == "immediate"
    assert settings.probe.backend == "pyav"
    assert settings.uploads.max_size_bytes == 536_870_912
    assert settings.enable_legacy is False
    assert settings.uses_development_secret


def test_the_defaults_pass_every_check_as_parsed_values_would() -> None:
    # load_settings returns the defaults unchecked when no variable is set; they must be what
    # parsing nothing gives, and pass the checks any parsed settings go through.
    from heimdex.settings import _check, _parse

    parsed, problems = _parse({})
    assert problems == []
    assert parsed == Settings() == load_settings({}, env_file=None)
    assert _check(Settings()) == []


def test_one_variable_set_is_parsed_and_checked() -> None:
    with pytest.raises(SettingsError):
        load_settings({"HEIMDEX_PROBE_TIMEOUT_SECONDS": "-1"}, env_file=None)


def test_values_are_typed() -> None:
    settings = load_settings(
        {
            "HEIMDEX_ENABLE_LEGACY": "true",
            "HEIMDEX_PORT": "9001",
            "HEIMDEX_MAX_UPLOAD_SIZE_BYTES": "1024",
            "HEIMDEX_DATA_DIR": "/srv/heimdex",
            "HEIMDEX_PROBER": "ffprobe",
        },
        env_file=None,
    )
    assert settings.enable_legacy is True
    assert settings.http.port == 9001
    assert settings.uploads.max_size_bytes == 1024
    assert settings.data_dir == Path("/srv/heimdex")
    assert settings.resolved_storage_root == Path("/srv/heimdex/storage")
    assert settings.probe.backend == "ffprobe"


def test_every_bad_value_is_one_line_naming_its_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "HEIMDEX_PORT": "eighty",
                "HEIMDEX_ENV": "prod",
                "HEIMDEX_ENABLE_LEGACY": "maybe",
                "HEIMDEX_DATA_DIR": "",
            },
            env_file=None,
        )
    problems = caught.value.problems
    assert len(problems) == 4
    by_name = {p.split("=", 1)[0].split(" ", 1)[0]: p for p in problems}
    assert "whole number" in by_name["HEIMDEX_PORT"]
    assert "'development', 'production'" in by_name["HEIMDEX_ENV"]
    assert "true or false" in by_name["HEIMDEX_ENABLE_LEGACY"]
    assert "must be a path" in by_name["HEIMDEX_DATA_DIR"]
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"HEIMDEX_MAX_UPLOAD_SIZE_BYTES": "0"}, "HEIMDEX_MAX_UPLOAD_SIZE_BYTES"),
        ({"HEIMDEX_PORT": "70000"}, "HEIMDEX_PORT"),
        ({"HEIMDEX_PROBE_TIMEOUT_SECONDS": "-1"}, "HEIMDEX_PROBE_TIMEOUT_SECONDS"),
        ({"HEIMDEX_WORKER_METRICS_PORT": "-1"}, "HEIMDEX_WORKER_METRICS_PORT"),
        ({"HEIMDEX_WORKER_METRICS_PORT": "65536"}, "HEIMDEX_WORKER_METRICS_PORT"),
        ({"HEIMDEX_DECODE_MEMORY_LIMIT_BYTES": "-1"}, "HEIMDEX_DECODE_MEMORY_LIMIT_BYTES"),
        ({"HEIMDEX_DECODE_CPU_LIMIT_SECONDS": "-1"}, "HEIMDEX_DECODE_CPU_LIMIT_SECONDS"),
        ({"HEIMDEX_DECODE_MAX_PIXELS": "-1"}, "HEIMDEX_DECODE_MAX_PIXELS"),
        ({"HEIMDEX_DECODE_NICENESS": "20"}, "HEIMDEX_DECODE_NICENESS"),
        ({"HEIMDEX_DECODE_MAX_METADATA_ENTRIES": "-1"}, "HEIMDEX_DECODE_MAX_METADATA_ENTRIES"),
        ({"HEIMDEX_DECODE_MAX_METADATA_BYTES": "-1"}, "HEIMDEX_DECODE_MAX_METADATA_BYTES"),
        ({"HEIMDEX_PROBE_MAX_PER_ORG": "-1"}, "HEIMDEX_PROBE_MAX_PER_ORG"),
        ({"HEIMDEX_PROBE_WAIT_SECONDS": "-1"}, "HEIMDEX_PROBE_WAIT_SECONDS"),
        ({"HEIMDEX_PROBE_WORKER_WAIT_SECONDS": "0"}, "HEIMDEX_PROBE_WORKER_WAIT_SECONDS"),
        ({"HEIMDEX_SCRATCH_MAX_AGE_SECONDS": "0"}, "HEIMDEX_SCRATCH_MAX_AGE_SECONDS"),
        ({"HEIMDEX_HTTP_MAX_HEADER_BYTES": "0"}, "HEIMDEX_HTTP_MAX_HEADER_BYTES"),
        ({"HEIMDEX_HTTP_HEADER_TIMEOUT_SECONDS": "0"}, "HEIMDEX_HTTP_HEADER_TIMEOUT_SECONDS"),
        ({"HEIMDEX_HTTP_KEEP_ALIVE_SECONDS": "-1"}, "HEIMDEX_HTTP_KEEP_ALIVE_SECONDS"),
        ({"HEIMDEX_HTTP_MAX_CONNECTIONS": "0"}, "HEIMDEX_HTTP_MAX_CONNECTIONS"),
        # Shorter than a PUT may run, or a copy be probed: live scratch would be swept.
        ({"HEIMDEX_SCRATCH_MAX_AGE_SECONDS": "3599"}, "at least HEIMDEX_UPLOAD_STALL_SECONDS"),
        (
            {
                "HEIMDEX_SCRATCH_MAX_AGE_SECONDS": "60",
                "HEIMDEX_UPLOAD_STALL_SECONDS": "60",
                "HEIMDEX_THUMBNAIL_TIMEOUT_SECONDS": "61",
            },
            "HEIMDEX_THUMBNAIL_TIMEOUT_SECONDS",
        ),
    ],
)
def test_out_of_range_values_are_refused(variables: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(variables, env_file=None)
    assert any(fragment in p for p in caught.value.problems)


def test_the_scratch_max_age_may_be_as_short_as_the_longest_request() -> None:
    settings = load_settings(
        {"HEIMDEX_SCRATCH_MAX_AGE_SECONDS": "600", "HEIMDEX_UPLOAD_STALL_SECONDS": "600"},
        env_file=None,
    )
    assert settings.sweeps.scratch_max_age_seconds == 600
    assert load_settings({}, env_file=None).sweeps.scratch_max_age_seconds == 86400


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HEIMDEX_ENV": "production"}, env_file=None)
    assert "change-me" in caught.value.problems[0]


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HEIMDEX_ENV": "production", "HEIMDEX_JWT_SECRET": "x" * 31}, env_file=None)
    assert "32 bytes" in caught.value.problems[0]


def test_production_accepts_a_long_secret() -> None:
    settings = load_settings(
        {"HEIMDEX_ENV": "production", "HEIMDEX_JWT_SECRET": "x" * 32}, env_file=None
    )
    assert settings.is_production


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("HEIMDEX_PORT=9100\nHEIMDEX_ENABLE_LEGACY=true\nOTHER=1\n")
    settings = load_settings({"HEIMDEX_PORT": "9200"}, env_file=env_file)
    assert settings.http.port == 9200
    assert settings.enable_legacy is True


def test_unknown_heimdex_variables_are_reported_as_likely_typos() -> None:
    raw = {"HEIMDEX_PORT": "1", "HEIMDEX_ENABLE_LEGAYC": "true", "PATH": "/bin"}
    assert unknown_variables(raw) == ["HEIMDEX_ENABLE_LEGAYC"]
    # `heimdex ingest --api`'s own variables are not typos, though the service ignores them
    assert unknown_variables({"HEIMDEX_API_URL": "http://x", "HEIMDEX_TOKEN": "t"}) == []


def test_s3_needs_a_bucket() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HEIMDEX_STORAGE_BACKEND": "s3"}, env_file=None)
    assert caught.value.problems == [
        "HEIMDEX_S3_BUCKET is required when HEIMDEX_STORAGE_BACKEND=s3"
    ]


def test_s3_settings_are_read() -> None:
    settings = load_settings(
        {
            "HEIMDEX_STORAGE_BACKEND": "s3",
            "HEIMDEX_S3_BUCKET": "heimdex-media",
            "HEIMDEX_S3_ENDPOINT_URL": "http://minio:9000",
            "HEIMDEX_S3_PUBLIC_ENDPOINT_URL": "https://media.example.com",
            "HEIMDEX_S3_REGION": "eu-west-1",
            "HEIMDEX_S3_ADDRESSING_STYLE": "path",
        },
        env_file=None,
    )
    assert settings.storage.backend == "s3"
    assert settings.s3.bucket == "heimdex-media"
    assert settings.s3.endpoint_url == "http://minio:9000"
    assert settings.s3.public_endpoint_url == "https://media.example.com"
    assert settings.s3.region == "eu-west-1"
    assert settings.s3.addressing_style == "path"


def test_s3_without_an_endpoint_is_aws_itself() -> None:
    settings = load_settings(
        {"HEIMDEX_STORAGE_BACKEND": "s3", "HEIMDEX_S3_BUCKET": "media", "HEIMDEX_S3_REGION": ""},
        env_file=None,
    )
    assert settings.s3.endpoint_url is None
    assert settings.s3.addressing_style == "auto"


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"HEIMDEX_S3_BUCKET": "Not_A_Bucket"}, "HEIMDEX_S3_BUCKET='Not_A_Bucket'"),
        ({"HEIMDEX_S3_BUCKET": "ab"}, "HEIMDEX_S3_BUCKET='ab'"),
        ({"HEIMDEX_S3_ENDPOINT_URL": "minio:9000"}, "HEIMDEX_S3_ENDPOINT_URL='minio:9000'"),
        ({"HEIMDEX_S3_PUBLIC_ENDPOINT_URL": "s3.example"}, "HEIMDEX_S3_PUBLIC_ENDPOINT_URL"),
        ({"HEIMDEX_S3_ADDRESSING_STYLE": "dns"}, "HEIMDEX_S3_ADDRESSING_STYLE='dns'"),
        ({"HEIMDEX_UPLOAD_URL_TTL_SECONDS": "604801"}, "HEIMDEX_UPLOAD_URL_TTL_SECONDS"),
        ({"HEIMDEX_DOWNLOAD_URL_TTL_SECONDS": "999999"}, "HEIMDEX_DOWNLOAD_URL_TTL_SECONDS"),
    ],
)
def test_bad_s3_settings_are_refused(variables: dict[str, str], fragment: str) -> None:
    environ = {"HEIMDEX_STORAGE_BACKEND": "s3", "HEIMDEX_S3_BUCKET": "media", **variables}
    with pytest.raises(SettingsError) as caught:
        load_settings(environ, env_file=None)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(fragment)


def test_s3_settings_are_not_checked_for_local_storage() -> None:
    settings = load_settings({"HEIMDEX_UPLOAD_URL_TTL_SECONDS": "999999"}, env_file=None)
    assert settings.uploads.url_ttl_seconds == 999_999


def test_metrics_settings_default_to_an_open_api_endpoint_and_no_worker_port() -> None:
    settings = load_settings({}, env_file=None)
    assert (settings.metrics.token, settings.metrics.worker_port) == (None, 0)
    given = load_settings(
        {"HEIMDEX_METRICS_TOKEN": "t0ken", "HEIMDEX_WORKER_METRICS_PORT": "9100"}, env_file=None
    )
    assert (given.metrics.token, given.metrics.worker_port) == ("t0ken", 9100)


def test_decode_limits_are_read_and_reach_the_adapters() -> None:
    settings = load_settings(
        {
            "HEIMDEX_DECODE_MEMORY_LIMIT_BYTES": "0",
            "HEIMDEX_DECODE_CPU_LIMIT_SECONDS": "30",
            "HEIMDEX_DECODE_FILE_SIZE_LIMIT_BYTES": "1024",
            "HEIMDEX_DECODE_NICENESS": "0",
            "HEIMDEX_DECODE_MAX_PIXELS": "2073600",
            "HEIMDEX_DECODE_MAX_STREAMS": "8",
        },
        env_file=None,
    )
    limits = decode_limits(settings)
    assert (limits.memory_bytes, limits.cpu_seconds, limits.file_size_bytes) == (0, 30, 1024)
    assert (limits.niceness, limits.max_pixels, limits.max_streams) == (0, 2073600, 8)
    assert decode_limits(load_settings({}, env_file=None)).max_pixels == 8192 * 8192


def test_probe_limits_are_read_and_reach_the_adapters() -> None:
    settings = load_settings(
        {
            "HEIMDEX_DECODE_MAX_METADATA_ENTRIES": "100",
            "HEIMDEX_DECODE_MAX_METADATA_BYTES": "2048",
            "HEIMDEX_PROBE_WORKER_WAIT_SECONDS": "2.5",
        },
        env_file=None,
    )
    limits = decode_limits(settings)
    assert (limits.max_metadata_entries, limits.max_metadata_bytes) == (100, 2048)
    prober = build_prober(settings)
    assert isinstance(prober, PyAVProber)
    assert prober.pool.wait_seconds == 2.5
    defaults = load_settings({}, env_file=None)
    assert (defaults.probe.max_per_org, defaults.probe.wait_seconds) == (1, 5.0)


def test_http_connection_limits_default_to_common_server_values() -> None:
    settings = load_settings({}, env_file=None)
    assert (
        settings.http.max_header_bytes,
        settings.http.header_timeout_seconds,
        settings.http.keep_alive_seconds,
        settings.http.max_connections,
    ) == (65_536, 10.0, 5.0, 4096)


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_an_empty_jwt_secret_is_refused_in_every_environment(value: str) -> None:
    """Empty, it used to start and then answer every request 500 (PyJWT refuses the key)."""
    for env in ("development", "production"):
        with pytest.raises(SettingsError) as caught:
            load_settings({"HEIMDEX_ENV": env, "HEIMDEX_JWT_SECRET": value}, env_file=None)
        assert caught.value.problems == ["HEIMDEX_JWT_SECRET is empty: it must have a value"]


@pytest.mark.parametrize(
    "name",
    [
        "HEIMDEX_REDIS_URL",
        "HEIMDEX_REDIS_QUEUE_NAME",
        "HEIMDEX_FFPROBE_PATH",
        "HEIMDEX_FFMPEG_PATH",
        "HEIMDEX_HOST",
    ],
)
def test_other_required_text_settings_are_refused_empty(name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: " "}, env_file=None)
    assert caught.value.problems == [f"{name} is empty: it must have a value"]


def test_an_empty_metrics_token_is_refused_rather_than_leaving_metrics_open() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"HEIMDEX_METRICS_TOKEN": "  "}, env_file=None)
    assert caught.value.problems == ["HEIMDEX_METRICS_TOKEN is empty: set a value, or unset it"]
    assert load_settings({}, env_file=None).metrics.token is None


def test_the_jwt_codec_refuses_an_empty_secret() -> None:
    """Settings built in code skip ``load_settings``; the codec still refuses at build time."""
    from heimdex.adapters.auth.jwt import JwtCodec

    with pytest.raises(ValueError, match="empty"):
        JwtCodec(" ")


def test_settings_come_in_sections_and_keep_their_variables() -> None:
    settings = load_settings(
        {
            "HEIMDEX_PORT": "9001",
            "HEIMDEX_DECODE_WORKERS": "3",
            "HEIMDEX_JOB_LEASE_SECONDS": "90",
            "HEIMDEX_S3_BUCKET": "media",
            "HEIMDEX_RATE_LIMIT_PER_SECOND": "2.5",
            "HEIMDEX_MAX_UPLOAD_SIZE_BYTES": "2048",
            "HEIMDEX_SWEEP_INTERVAL_SECONDS": "7",
        },
        env_file=None,
    )
    assert settings.http.port == 9001
    assert settings.decode.workers == 3
    assert settings.jobs.lease_seconds == 90
    assert settings.s3.bucket == "media"
    assert settings.limits.rate_limit_per_second == 2.5
    assert settings.uploads.max_size_bytes == 2048
    assert settings.jobs.sweep_interval_seconds == 7


def test_every_variable_sets_its_own_field_and_is_known() -> None:
    found = variables()
    assert len({(v.section, v.field) for v in found}) == len(found)
    assert {v.name for v in found} == environment_variables()
    assert unknown_variables(dict.fromkeys(environment_variables(), "")) == []


def test_settings_built_in_code_take_the_variables_names() -> None:
    settings = Settings.from_flat(data_dir=Path("/srv"), port=9000, decode_workers=1)
    assert (settings.data_dir, settings.http.port, settings.decode.workers) == (
        Path("/srv"),
        9000,
        1,
    )
    assert settings.jwt.secret == "change-me"  # the rest keep their defaults
    changed = settings.replace_flat(port=9001, jwt_secret="s")
    assert (changed.http.port, changed.jwt.secret, changed.decode.workers) == (9001, "s", 1)
    assert settings.http.port == 9000
    with pytest.raises(TypeError, match="HEIMDEX_PROT"):
        Settings.from_flat(prot=1)


@pytest.mark.parametrize(
    ("variables_", "problem"),
    [
        ({"HEIMDEX_PORT": "0"}, "HEIMDEX_PORT=0: must be between 1 and 65535"),
        ({"HEIMDEX_JOB_LEASE_SECONDS": "0"}, "HEIMDEX_JOB_LEASE_SECONDS=0: must be positive"),
        (
            {"HEIMDEX_DECODE_MAX_PIXELS": "-1"},
            "HEIMDEX_DECODE_MAX_PIXELS=-1: must not be negative (0: no limit)",
        ),
        (
            {"HEIMDEX_WORKER_METRICS_PORT": "65536"},
            "HEIMDEX_WORKER_METRICS_PORT=65536: must be between 0 and 65535 (0: off)",
        ),
        (
            {"HEIMDEX_JWT_LEEWAY_SECONDS": "-1"},
            "HEIMDEX_JWT_LEEWAY_SECONDS=-1.0: must not be negative",
        ),
    ],
)
def test_a_range_declared_on_a_field_is_one_line_naming_its_variable(
    variables_: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(variables_, env_file=None)
    assert caught.value.problems == [problem]


def test_every_declared_lower_bound_is_enforced() -> None:
    """A number below its field's declared bound is refused, naming its variable."""
    bounded = [
        v
        for v in variables()
        if v.annotation in (int, float)
        and any(m.gt is not None or m.ge is not None for m in v.constraints)
    ]
    assert len(bounded) > 30
    for variable in bounded:
        low = min(
            [m.gt for m in variable.constraints if m.gt is not None]
            + [m.ge - 1 for m in variable.constraints if m.gt is None and m.ge is not None]
        )
        with pytest.raises(SettingsError) as caught:
            load_settings({variable.name: str(low)}, env_file=None)
        assert any(p.startswith(variable.name) for p in caught.value.problems), variable.name
