"""The console script's quick probe path reads a probe line exactly as the typer application does,
and leaves every line it does not read that way to typer."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdex.entrypoints import cli
from heimdex.entrypoints.console import ProbeArgs, plain_probe

PLAIN = [
    ["probe", "a.mp4"],
    ["probe", "a.mp4", "--json"],
    ["probe", "--json", "a.mp4", "b.mkv"],
    ["probe", "-j", "3", "a.mp4"],
    ["probe", "-j3", "a.mp4"],
    ["probe", "--jobs=2", "a.mp4", "--jobs", "5"],
    ["probe", "--", "--json", "-j"],
    ["probe", "a.mp4", "--", "-h"],
    ["probe", "-", "a.mp4"],
    ["probe", "a b.mp4", "ünïcode.mkv", "--json", "-j", "1"],
]
# Lines the quick path leaves to typer: help, mistakes, and what it does not bother to read.
TYPERS = [
    ["probe"],
    ["probe", "--json"],
    ["probe", "--help"],
    ["probe", "a.mp4", "-h"],
    ["probe", "-j", "0", "a.mp4"],
    ["probe", "-j", "x", "a.mp4"],
    ["probe", "-j", "+4", "a.mp4"],
    ["probe", "-j=4", "a.mp4"],
    ["probe", "a.mp4", "--jobs"],
    ["probe", "a.mp4", "--nope"],
    ["probe", "-jx", "a.mp4"],
    ["probe", "--json=yes", "a.mp4"],
    ["--version", "probe", "a.mp4"],
    [],
]


def _as_typer_reads_it(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> ProbeArgs | int:
    """What the typer application hands ``cmd_probe`` for ``argv``, or its exit status."""
    seen: list[ProbeArgs] = []

    def record(args: ProbeArgs) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli, "cmd_probe", record)
    status = cli.main(argv)
    return seen[0] if seen else status


def _fields(args: ProbeArgs) -> tuple[list[Path], bool, int]:
    return args.files, args.json, args.jobs


@pytest.mark.parametrize("argv", PLAIN + TYPERS)
def test_the_quick_path_reads_a_line_as_typer_does_or_not_at_all(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quick = plain_probe(argv)
    typer_reads = _as_typer_reads_it(argv, monkeypatch)
    if argv in PLAIN:
        assert quick is not None
    if quick is not None:
        assert isinstance(typer_reads, ProbeArgs), capsys.readouterr()
        assert _fields(quick) == _fields(typer_reads)


@pytest.mark.parametrize("argv", [*TYPERS, ["serve"], ["ingest", "a.mp4"], ["token"]])
def test_help_mistakes_and_other_commands_go_to_typer(argv: list[str]) -> None:
    assert plain_probe(argv) is None


def test_shell_completion_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_HEIMDEX_COMPLETE", "complete_bash")
    assert plain_probe(["probe", "a.mp4"]) is None
