"""The heimdex command line, run as a real process on real media."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

SECRET = "cli-test-secret-that-is-at-least-32-bytes"


def heimdex(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    clean.update({"HEIMDEX_DATA_DIR": str(cwd / "data"), "HEIMDEX_JWT_SECRET": SECRET})
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "heimdex", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(params=["pyav", "ffprobe"])
def prober_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"HEIMDEX_PROBER": request.param}


def test_probe_json_gives_the_design_fields(
    tmp_path: Path, h264_aac_mp4: Path, prober_env: dict[str, str]
) -> None:
    result = heimdex("probe", str(h264_aac_mp4), "--json", cwd=tmp_path, env=prober_env)
    assert result.returncode == 0, result.stderr
    media = json.loads(result.stdout)
    assert media["format_name"] == "mov,mp4,m4a,3gp,3g2,mj2"
    assert abs(media["duration"] - 4.0) <= 0.05
    assert media["size_bytes"] == h264_aac_mp4.stat().st_size
    assert media["bit_rate"] > 0
    video, audio = media["streams"]
    assert video["kind"] == "video"
    assert video["codec"] == "h264"
    assert video["profile"] == "High"
    assert (video["width"], video["height"], video["rotation"]) == (640, 360, 0)
    assert (video["display_width"], video["display_height"]) == (640, 360)
    assert video["frame_rate"] == 25.0
    assert video["pix_fmt"] == "yuv420p"
    assert video["bit_depth"] == 8
    assert video["hdr"] is False
    assert audio["kind"] == "audio"
    assert (audio["codec"], audio["channels"], audio["sample_rate"]) == ("aac", 2, 48000)
    assert audio["channel_layout"] == "stereo"
    assert media["chapters"] == []


def test_probe_json_on_a_rotated_clip(
    tmp_path: Path, rotated_mp4: Path, prober_env: dict[str, str]
) -> None:
    result = heimdex("probe", str(rotated_mp4), "--json", cwd=tmp_path, env=prober_env)
    assert result.returncode == 0, result.stderr
    video = json.loads(result.stdout)["streams"][0]
    assert video["rotation"] == 90
    assert (video["display_width"], video["display_height"]) == (360, 640)


def test_probe_table_is_readable(tmp_path: Path, h264_aac_mp4: Path) -> None:
    result = heimdex("probe", str(h264_aac_mp4), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "h264 (High)" in result.stdout
    assert "640x360" in result.stdout
    assert "48000 Hz" in result.stdout


def test_probe_on_a_text_file_is_one_line_and_non_zero(
    tmp_path: Path, text_mp4: Path, prober_env: dict[str, str]
) -> None:
    result = heimdex("probe", str(text_mp4), "--json", cwd=tmp_path, env=prober_env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "invalid_media" in lines[0]
    assert "Traceback" not in result.stderr


def test_probe_several_files_reports_each(
    tmp_path: Path, h264_aac_mp4: Path, text_mp4: Path
) -> None:
    missing = tmp_path / "missing.mp4"
    result = heimdex(
        "probe", str(h264_aac_mp4), str(text_mp4), str(missing), "--json", cwd=tmp_path
    )
    assert result.returncode == 1
    listing = json.loads(result.stdout)
    assert [item["file"] for item in listing] == [str(h264_aac_mp4)]
    assert len(result.stderr.strip().splitlines()) == 2


def test_probe_names_a_missing_file_a_directory_and_bad_media_once_each(
    tmp_path: Path, text_mp4: Path, prober_env: dict[str, str]
) -> None:
    missing, folder = tmp_path / "missing.mp4", tmp_path / "clips"
    folder.mkdir()
    result = heimdex(
        "probe", str(missing), str(folder), str(text_mp4), cwd=tmp_path, env=prober_env
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"heimdex: {missing}: no such file"
    assert lines[1].startswith(f"heimdex: {folder}: is a directory")
    assert lines[2].startswith(f"heimdex: {text_mp4}: invalid_media: ")
    for line, path in zip(lines, (missing, folder, text_mp4), strict=True):
        assert line.count(path.name) == 1, line
    assert "heimdex_error" not in result.stderr
    assert "not a regular file" not in result.stderr


def test_probe_of_one_file_starts_no_decode_pool(tmp_path: Path, h264_aac_mp4: Path) -> None:
    # The pool's workers come from a forkserver: a child process of ours would show as one.
    code = (
        "import sys, multiprocessing\n"
        "from heimdex.entrypoints.cli import main\n"
        "status = main(['probe', sys.argv[1]])\n"
        "assert 'heimdex.adapters.media.decode_pool' not in sys.modules\n"
        "assert multiprocessing.active_children() == []\n"
        "sys.exit(status)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(h264_aac_mp4)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "h264 (High)" in result.stdout


# What `heimdex probe FILE` must not import: the web, database, queue and logging stacks, the
# HTTP client, and the typer application itself (click, rich) - the start-up that made one probe
# cost several times ffprobe's whole run.
_NOT_FOR_PROBE = {
    "litestar", "sqlalchemy", "advanced_alchemy", "alembic", "asyncpg", "aiosqlite", "taskiq",
    "redis", "structlog", "pydantic", "httpx", "aioboto3", "botocore", "uvicorn", "jwt",
    "typer", "click", "rich", "asyncio", "concurrent", "argparse",
}  # fmt: skip


@pytest.mark.parametrize("as_json", [False, True])
def test_probe_imports_only_what_probing_needs(
    tmp_path: Path, h264_aac_mp4: Path, as_json: bool
) -> None:
    # The console script's own module, run as `python -m heimdex`; -X importtime lists every
    # module the process imported, on standard error.
    flags = ["--json"] if as_json else []
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "heimdex", "probe", *flags, str(h264_aac_mp4)],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "h264" in result.stdout
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    packages = {name.split(".")[0] for name in imported}
    assert {"av", "msgspec", "heimdex"} <= packages  # the listing was read
    assert packages & _NOT_FOR_PROBE == set()
    assert "heimdex.bootstrap" not in imported
    assert not any(name.startswith("heimdex.application") for name in imported)


def test_ingest_api_imports_no_service_stack_and_no_rich_for_json(tmp_path: Path) -> None:
    # A client of another Heimdex: no web, database or media stack; with --json and no terminal
    # nothing draws, so neither rich nor httpx's own command line (rich, pygments) is imported.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "heimdex", "ingest",
         "--api", "http://127.0.0.1:9", "--token", "t", "--json", str(empty)],
        cwd=tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]  # nothing listens there
    assert "heimdex: unreachable: " in result.stderr
    packages = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }
    assert {"httpx", "typer", "heimdex"} <= packages  # the listing was read
    unwanted = {"rich", "pygments", "litestar", "sqlalchemy", "alembic", "taskiq", "av"}
    assert packages & unwanted == set()


def test_httpx_command_line_is_blocked_only_while_httpx_is_imported() -> None:
    code = (
        "import sys\n"
        "from heimdex.bootstrap_ingest import _import_httpx_without_its_command_line as imp\n"
        "imp()\n"
        "assert 'httpx' in sys.modules and 'rich' not in sys.modules\n"
        "assert 'httpx._main' not in sys.modules\n"
        "import httpx._main\n"  # still importable on purpose afterwards
        "assert 'rich' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_console_script_is_the_quick_dispatcher() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="heimdex")
    assert script.value == "heimdex.entrypoints.console:run"


def test_token_mints_a_verifiable_token(tmp_path: Path) -> None:
    result = heimdex("token", "--org", "acme", "--scope", "admin", "--scope", "read", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["org_id"] == "acme"
    assert claims["scopes"] == ["admin", "read"]
    assert "exp" in claims


def test_token_refuses_an_unusable_org_in_one_line(tmp_path: Path) -> None:
    result = heimdex("token", "--org", "../etc", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--org" in result.stderr


def test_bad_configuration_is_one_line_per_value(tmp_path: Path) -> None:
    result = heimdex(
        "token",
        "--org",
        "acme",
        cwd=tmp_path,
        env={"HEIMDEX_PORT": "eighty", "HEIMDEX_PROBER": "magic"},
    )
    assert result.returncode == 2
    assert "HEIMDEX_PORT='eighty': must be a whole number" in result.stderr
    assert "HEIMDEX_PROBER='magic': must be one of 'pyav', 'ffprobe'" in result.stderr
    assert "Traceback" not in result.stderr


def _every_command() -> list[list[str]]:
    """Every command and group of the application, found in it (so a new one is checked too)."""
    import click
    import typer.main

    from heimdex.entrypoints.cli import app

    found: list[list[str]] = []

    def visit(command: click.Command, path: list[str]) -> None:
        found.append(path)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                visit(sub, [*path, name])

    visit(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("command", _every_command(), ids=lambda c: " ".join(c) or "heimdex")
def test_help_describes_every_command_with_an_example(tmp_path: Path, command: list[str]) -> None:
    result = heimdex(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "usage: heimdex" in result.stdout.lower()
    assert len(result.stdout.splitlines()) > 4
    assert "Example:" in result.stdout
    example = result.stdout.split("Example:")[1]
    assert re.search(rf"\$ (\S+=\S+ )*heimdex {re.escape(' '.join(command))}", example), example


@pytest.mark.parametrize(("command", "usage"), [("probe", "FILE..."), ("ingest", "PATH...")])
def test_usage_says_a_command_takes_several_paths(tmp_path: Path, command: str, usage: str) -> None:
    result = heimdex(command, "--help", cwd=tmp_path)
    assert f"Usage: heimdex {command} [OPTIONS] {usage}" in result.stdout


def test_every_command_is_there() -> None:
    assert {" ".join(c) for c in _every_command()} >= {
        "", "serve", "probe", "ingest", "token", "worker", "replay", "reindex", "db",
        "db upgrade",
    }  # fmt: skip


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = heimdex(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage:" in (result.stdout + result.stderr).lower()


def test_shell_completion_script_is_offered(tmp_path: Path) -> None:
    result = heimdex("--show-completion", "bash", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "complete" in result.stdout
    assert "heimdex" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("heimdex in", {"ingest"}),
        ("heimdex re", {"replay", "reindex"}),
        ("heimdex ingest --re", {"--recursive"}),
        ("heimdex probe clip.mp4 --j", {"--json", "--jobs"}),  # not the quick probe path's
        ("heimdex db up", {"upgrade"}),
    ],
)
def test_shell_completion_completes_commands_and_options(
    tmp_path: Path, words: str, expected: set[str]
) -> None:
    # What the installed bash script asks the program on each Tab.
    result = heimdex(
        cwd=tmp_path,
        env={
            "_HEIMDEX_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        },
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == expected


def test_version(tmp_path: Path) -> None:
    result = heimdex("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("heimdex ")


def test_worker_refuses_the_immediate_backend_in_one_line(tmp_path: Path) -> None:
    result = heimdex("worker", cwd=tmp_path)
    assert result.returncode == 2
    assert "HEIMDEX_JOB_QUEUE_BACKEND=redis" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_worker_refuses_metrics_ports_past_65535(tmp_path: Path) -> None:
    # Process N serves HEIMDEX_WORKER_METRICS_PORT + N: the last of four would be 65536.
    result = heimdex(
        "worker",
        "--processes",
        "4",
        cwd=tmp_path,
        env={
            "HEIMDEX_JOB_QUEUE_BACKEND": "redis",
            "HEIMDEX_WORKER_METRICS_PORT": "65533",
        },
    )
    assert result.returncode == 2
    assert "65536 is past 65535" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_an_empty_jwt_secret_at_start_up(tmp_path: Path) -> None:
    """It used to start and answer every request 500; now it never listens."""
    result = heimdex("serve", "--port", "0", cwd=tmp_path, env={"HEIMDEX_JWT_SECRET": ""})
    assert result.returncode == 2
    assert "HEIMDEX_JWT_SECRET is empty: it must have a value" in result.stderr
    assert "Traceback" not in result.stderr
