"""Static checks of the files that build, ship and test Heimdex.

compose.yaml, the Containerfile, .env.example, .ci/run and the Makefile are read as text (and the
compose file as YAML): no container engine is needed. Each check guards a property a deployment or
CI relies on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from heimdex.settings import CLIENT_VARIABLES, environment_variables, unknown_variables
from tests.requirements import require_binary

ROOT = Path(__file__).resolve().parents[2]
HEIMDEX_VAR = re.compile(r"\bHEIMDEX_[A-Z0-9_]+\b")
APP_SERVICES = ("migrate", "api", "worker")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _read(name: str) -> str:
    path = ROOT / name
    assert path.is_file(), f"{name} is missing"
    return path.read_text(encoding="utf-8")


def _as_argv(value: Any) -> list[str]:
    """A compose ``command``/``test`` in either form (list or string) as an argv list."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # the short form means condition: service_started
        return {name: {"condition": "service_started"} for name in deps}
    return {str(k): dict(v or {}) for k, v in deps.items()}


def _documented_variables() -> list[str]:
    """Variables .env.example documents, as ``# HEIMDEX_X=default`` lines."""
    return re.findall(r"^#\s*(HEIMDEX_[A-Z0-9_]+)=", _read(".env.example"), flags=re.MULTILINE)


def _settings_variables() -> set[str]:
    return set(environment_variables())


def _configuration_table_variables() -> set[str]:
    """Variables docs/configuration.md's settings table names, as `` `HEIMDEX_X` `` cells."""
    rows = [line for line in _read("docs/configuration.md").splitlines() if line.startswith("| `")]
    return {
        name for row in rows for name in re.findall(r"`(HEIMDEX_[A-Z0-9_]+)`", row.split("|")[1])
    }


def _variables_read_directly() -> set[str]:
    """``HEIMDEX_*`` names the code reads from the environment outside ``Settings``."""
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](HEIMDEX_[A-Z0-9_]+)""")
    return {
        name
        for path in (ROOT / "src").rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(_read("compose.yaml"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "compose.yaml has no services mapping"
    return found


# ---------------------------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------------------------


def test_compose_defines_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "redis", "minio", "bucket", "migrate", "api", "worker"} <= set(services)


def test_app_services_share_one_image_built_from_the_containerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    shapes = {
        name: json.dumps(
            {"build": services[name].get("build"), "image": services[name].get("image")}
        )
        for name in APP_SERVICES
    }
    assert len(set(shapes.values())) == 1, f"migrate/api/worker differ: {shapes}"
    build = services["api"].get("build")
    assert isinstance(build, dict), "api must be built from the Containerfile"
    context = ROOT / str(build.get("context", "."))
    assert (context / str(build.get("dockerfile", "Dockerfile"))).name == "Containerfile"
    assert (context / "Containerfile").is_file()


def test_migrate_runs_db_upgrade(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert _as_argv(migrate.get("command")) == ["db", "upgrade"]
    assert "entrypoint" not in migrate, "the image's ENTRYPOINT (heimdex) must stay in force"
    assert _depends_on(migrate)["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_app_waits_for_migrations_the_bucket_and_redis(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    deps = _depends_on(services[name])
    assert deps.get("migrate", {}).get("condition") == "service_completed_successfully"
    assert deps.get("bucket", {}).get("condition") == "service_completed_successfully"
    assert deps.get("redis", {}).get("condition") == "service_healthy"


def test_the_bucket_is_made_once_minio_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    bucket = services["bucket"]
    assert _depends_on(bucket)["minio"]["condition"] == "service_healthy"
    script = " ".join(_as_argv(bucket.get("entrypoint")) + _as_argv(bucket.get("command")))
    name = _environment(services["api"])["HEIMDEX_S3_BUCKET"]
    assert f"mc mb --ignore-existing store/{name}" in script
    assert bucket.get("restart") == "no"


def test_api_serves_on_all_interfaces_and_publishes_8000(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    argv = _as_argv(api.get("command"))
    assert argv[:1] == ["serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the container
    assert argv[argv.index("--port") + 1] == "8000"
    assert any(str(p).endswith(":8000") for p in api.get("ports", []))


def test_api_healthcheck_asks_health(services: dict[str, dict[str, Any]]) -> None:
    check = services["api"].get("healthcheck") or {}
    assert not check.get("disable", False)
    assert "127.0.0.1:8000/health" in " ".join(_as_argv(check.get("test")))


def test_every_healthy_condition_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep, spec in _depends_on(service).items():
            if spec.get("condition") != "service_healthy":
                continue
            check = services[dep].get("healthcheck") or {}
            usable = bool(check.get("test")) and not check.get("disable", False)
            assert usable, f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"


def test_worker_can_scale(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert _as_argv(worker.get("command")) == ["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a fixed host port would stop --scale worker=N"


def test_api_and_worker_keep_media_in_minio(services: dict[str, dict[str, Any]]) -> None:
    for name in ("api", "worker"):
        env = _environment(services[name])
        assert env["HEIMDEX_STORAGE_BACKEND"] == "s3"
        assert env["HEIMDEX_S3_ENDPOINT_URL"] == "http://minio:9000"
        # Clients reach the store by another name than the containers do: signed for that one.
        assert env["HEIMDEX_S3_PUBLIC_ENDPOINT_URL"].endswith("http://localhost:9000}")
        assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
        secret = services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
        assert env["AWS_SECRET_ACCESS_KEY"] == secret
    assert any(str(p).startswith("9000:") for p in services["minio"].get("ports", []))


def test_the_service_and_the_migrations_connect_as_different_roles(
    services: dict[str, dict[str, Any]],
) -> None:
    """Row-level security binds the service only if it is not the tables' owner (the roles
    themselves are checked for real in tests/integration/test_compose_postgres_roles.py)."""
    env = _environment(services["migrate"])
    runtime = env["HEIMDEX_DATABASE_URL"].split("://", 1)[1].split(":", 1)[0]
    owner = env["HEIMDEX_MIGRATION_DATABASE_URL"].split("://", 1)[1].split(":", 1)[0]
    assert runtime != owner
    mounts = [str(v) for v in services["postgres"].get("volumes", [])]
    assert any(
        m.startswith("./deploy/postgres/10-heimdex-roles.sh:/docker-entrypoint-initdb.d/")
        for m in mounts
    )


def test_app_environment_is_production_on_postgres_and_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        env = _environment(services[name])
        assert env["HEIMDEX_ENV"] == "production"
        assert env["HEIMDEX_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["HEIMDEX_DATABASE_URL"]
        assert env["HEIMDEX_REDIS_URL"].startswith("redis://redis:6379")
        assert env["HEIMDEX_JOB_QUEUE_BACKEND"] == "redis"
        # No secret is baked into the file: compose refuses to start without one.
        assert env["HEIMDEX_JWT_SECRET"].startswith("${HEIMDEX_JWT_SECRET:?")


def test_compose_variables_are_known_and_documented(
    services: dict[str, dict[str, Any]],
) -> None:
    used: set[str] = set(HEIMDEX_VAR.findall(_read("compose.yaml")))
    for service in services.values():
        used |= {k for k in _environment(service) if k.startswith("HEIMDEX_")}
    assert used, "compose.yaml configures no HEIMDEX_* variable"
    assert not unknown_variables(dict.fromkeys(used, "")), "compose sets unknown HEIMDEX_* names"
    missing = used - set(_documented_variables())
    assert not missing, f"not documented in .env.example: {sorted(missing)}"


def test_redis_never_evicts_queue_messages(services: dict[str, dict[str, Any]]) -> None:
    argv = _as_argv(services["redis"].get("command"))
    assert "--maxmemory-policy" in argv
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    assert argv[argv.index("--appendonly") + 1] == "yes"


# ---------------------------------------------------------------------------------------------
# .env.example
# ---------------------------------------------------------------------------------------------


def test_env_example_documents_every_variable_the_code_reads() -> None:
    documented = _documented_variables()
    assert len(documented) == len(set(documented)), "a variable is documented twice"
    known = _settings_variables() | _variables_read_directly() | CLIENT_VARIABLES
    assert set(documented) == known, (
        f"missing: {sorted(known - set(documented))}; "
        f"documented but read nowhere: {sorted(set(documented) - known)}"
    )


def test_settings_read_exactly_the_documented_variables() -> None:
    """Sections rename fields, never variables: every name the docs and .env.example give is
    read, and nothing else is."""
    # The client's variables (`heimdex ingest --api`) are documented but configure no server.
    documented = set(_documented_variables()) - _variables_read_directly() - CLIENT_VARIABLES
    assert _settings_variables() == documented
    assert _settings_variables() == _configuration_table_variables() - CLIENT_VARIABLES


def test_env_example_sets_nothing_when_copied_to_env() -> None:
    active = [
        line
        for line in _read(".env.example").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert active == []


def test_env_example_comments_every_variable() -> None:
    lines = _read(".env.example").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^#\s*HEIMDEX_", line):
            above = lines[i - 1] if i else ""
            is_comment = above.startswith("#") and not re.match(r"^#\s*HEIMDEX_", above)
            assert is_comment, f"no one-line comment above {line!r}"


# ---------------------------------------------------------------------------------------------
# Containerfile
# ---------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in _read("Containerfile").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (instr, _) in enumerate(steps) if instr == "FROM")
    return steps[last_from:]


def test_containerfile_is_multi_stage_on_python_311_slim() -> None:
    froms = [args for instr, args in _instructions() if instr == "FROM"]
    assert len(froms) >= 2
    assert all(f.split()[0].startswith("python:3.11-slim") for f in froms)
    assert any(instr == "COPY" and "--from=" in args for instr, args in _final_stage()), (
        "the final stage must copy the built venv from an earlier stage"
    )


def test_containerfile_syncs_the_lock_before_copying_the_source() -> None:
    steps = _instructions()
    syncs = [i for i, (instr, a) in enumerate(steps) if instr == "RUN" and "uv sync" in a]
    assert syncs, "no uv sync"
    assert all("--locked" in steps[i][1] for i in syncs)
    assert all("--no-dev" in steps[i][1] for i in syncs)
    copies_before = [a for instr, a in steps[: syncs[0]] if instr == "COPY"]
    assert copies_before, "the lock must be copied before the first uv sync"
    copied = {word for a in copies_before for word in a.split()[:-1]}
    assert {"pyproject.toml", "uv.lock"} <= copied
    assert not copied & {".", "src", "src/"}, "copying the source first defeats the layer cache"


def test_runtime_installs_ffmpeg() -> None:
    runs = [a for instr, a in _final_stage() if instr == "RUN"]
    assert any(re.search(r"apt-get install\b.*\bffmpeg\b", a) for a in runs)


def test_runtime_runs_as_a_non_root_user() -> None:
    users = [a for instr, a in _final_stage() if instr == "USER"]
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_runtime_healthcheck_exposes_and_entrypoint() -> None:
    final = _final_stage()
    checks = [a for instr, a in final if instr == "HEALTHCHECK"]
    assert checks
    assert "/health" in checks[-1]
    assert "curl" not in checks[-1], "slim images have no curl"
    exposed = {p for instr, a in final if instr == "EXPOSE" for p in a.split()}
    assert "8000" in exposed or "8000/tcp" in exposed
    entrypoints = [json.loads(a) for instr, a in final if instr == "ENTRYPOINT"]
    assert entrypoints
    assert entrypoints[-1] == ["heimdex"]
    envs = " ".join(a for instr, a in final if instr == "ENV")
    assert "/app/.venv/bin" in envs
    assert "HEIMDEX_DATA_DIR=" in envs


# ---------------------------------------------------------------------------------------------
# .ci/run
# ---------------------------------------------------------------------------------------------


def test_ci_script_is_executable_and_strict() -> None:
    path = ROOT / ".ci" / "run"
    assert path.is_file()
    assert os.access(path, os.X_OK), ".ci/run must be executable"
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0].startswith("#!")
    assert "bash" in lines[0]
    first_command = next(ln for ln in lines[1:] if ln and not ln.startswith("#"))
    assert first_command == "set -euo pipefail"


def test_ci_script_parses() -> None:
    bash = require_binary("bash")
    result = subprocess.run(
        [bash, "-n", str(ROOT / ".ci" / "run")], capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()


def test_ci_script_lints_and_tests_with_ci_true() -> None:
    text = _read(".ci/run")
    assert re.search(r"^export CI=true$", text, flags=re.MULTILINE)
    assert re.search(r"\bmake lint\b", text)
    assert re.search(r"\bmake test\b", text)
    assert text.index("make lint") < text.index("make test")


def test_nothing_fetches_an_installer_script() -> None:
    for name in (".ci/run", "Makefile", "Containerfile"):
        code = [ln for ln in _read(name).splitlines() if not ln.lstrip().startswith("#")]
        # Installing curl for the walkthrough is fine; fetching a URL with it is not.
        fetching = [ln for ln in code if re.search(r"\b(curl|wget)\b.*(https?|ftp)://", ln)]
        assert not fetching, f"{name} downloads something: {fetching}"


# ---------------------------------------------------------------------------------------------
# Makefile
# ---------------------------------------------------------------------------------------------


def _make_rules() -> dict[str, tuple[list[str], str]]:
    """target -> (prerequisites, recipe text), from explicit ``target: prereqs`` rules."""
    rules: dict[str, tuple[list[str], str]] = {}
    current: str | None = None
    for line in _read("Makefile").splitlines():
        if line.startswith("\t") and current is not None:
            prereqs, recipe = rules[current]
            rules[current] = (prereqs, recipe + line.strip() + "\n")
            continue
        if re.match(r"^\s*(ifeq|ifneq|ifdef|ifndef|else|endif)\b", line):
            continue  # a conditional inside a recipe keeps the rule open
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?![:=])([^#]*)", line)
        current = None
        if match and not match.group(1).startswith("."):
            current = match.group(1)
            rules[current] = (match.group(2).split(), "")
    return rules


def _closure(rules: dict[str, tuple[list[str], str]], target: str) -> set[str]:
    seen: set[str] = set()
    todo = [target]
    while todo:
        name = todo.pop()
        for dep in rules.get(name, ([], ""))[0]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _bootstrap_target(rules: dict[str, tuple[list[str], str]]) -> str:
    found = [t for t, (_, recipe) in rules.items() if "pip install --user" in recipe]
    assert len(found) == 1, "exactly one target must bootstrap uv with pip install --user"
    return found[0]


def test_makefile_bootstraps_uv_from_pypi_with_a_pep668_fallback() -> None:
    rules = _make_rules()
    recipe = rules[_bootstrap_target(rules)][1]
    assert re.search(r"-m pip install --user\b.*\buv\b", recipe)
    assert "--break-system-packages" in recipe
    text = _read("Makefile")
    assert ".local/bin" in text
    assert ".cargo/bin" in text


@pytest.mark.parametrize("target", ["install", "run", "test", "lint", "migrate", "bench"])
def test_make_targets_depend_on_the_uv_bootstrap(target: str) -> None:
    rules = _make_rules()
    assert target in rules, f"no {target} target"
    assert _bootstrap_target(rules) in _closure(rules, target)


@pytest.mark.parametrize("target", ["run", "test"])
def test_run_and_test_sync_the_locked_environment_first(target: str) -> None:
    rules = _make_rules()
    syncing = {t for t, (_, recipe) in rules.items() if "sync --locked" in recipe}
    assert syncing & _closure(rules, target), f"{target} does not run uv sync --locked first"


def _dry_run(tmp_path: Path, *args: str) -> str:
    make = require_binary("make")
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    # A machine with no uv: a bare PATH and an empty home (nothing in ~/.local or ~/.cargo).
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=str(tmp_path))
    env.pop("UV", None)
    result = subprocess.run(
        [make, "-n", "-C", str(ROOT), *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_test_dry_run_bootstraps_then_syncs_then_runs_pytest(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "test")
    bootstrap = out.index("pip install --user")
    sync = out.index("sync --locked")
    pytest_run = out.index("run --locked pytest")
    assert bootstrap < sync < pytest_run


def test_make_run_passes_host_and_port(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "run", "HOST=0.0.0.0", "PORT=9001")
    assert re.search(r"heimdex serve --host 0\.0\.0\.0 --port 9001\s*$", out, flags=re.MULTILINE)
    plain = _dry_run(tmp_path, "run")
    assert re.search(r"heimdex serve\s*$", plain, flags=re.MULTILINE)


def test_make_run_installs_and_runs_only_the_runtime_dependencies(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "run")
    sync = next(line for line in out.splitlines() if "sync --locked" in line)
    serve = next(line for line in out.splitlines() if "heimdex serve" in line)
    # `uv run` syncs the development group by default: both steps must leave it out.
    assert "--no-dev" in sync, sync
    assert "--no-dev" in serve, serve
    # Inexact, so `make run` after `make test` does not uninstall the test tools again.
    assert "--inexact" in sync, sync


def test_make_test_installs_the_development_group(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, "test")
    sync = next(line for line in out.splitlines() if "sync --locked" in line)
    assert "--no-dev" not in sync, sync


def test_runtime_dependencies_name_no_development_tool() -> None:
    project = tomllib.loads(_read("pyproject.toml"))
    runtime = {
        re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower()
        for spec in project["project"]["dependencies"]
    }
    dev = {
        re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower()
        for spec in project["dependency-groups"]["dev"]
    }
    assert {"pytest", "mypy", "ruff", "moto", "schemathesis"} <= dev
    assert not runtime & dev, f"in both the runtime and the dev group: {sorted(runtime & dev)}"
